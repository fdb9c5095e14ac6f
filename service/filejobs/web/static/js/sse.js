// A text/event-stream parser for streams read with fetch(): EventSource cannot send an
// Authorization header, so the dashboard reads /v1/events itself and parses it here.

/** An incremental text/event-stream parser (the WHATWG algorithm); calls onEvent({type, data, id})
 * for every dispatched event, onRetry(ms) for a retry field, onComment() for comment lines. */
export class SseParser {
  constructor({ onEvent, onRetry, onComment }) {
    this.onEvent = onEvent;
    this.onRetry = onRetry;
    this.onComment = onComment;
    this.buffer = '';
    this.first = true;
    this.afterCR = false;
    this.data = [];
    this.type = '';
    this.idBuffer = null;
    this.lastEventId = '';
  }

  push(text) {
    if (this.first && text.length) {
      this.first = false;
      if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
    }
    // a CRLF split across two chunks: the LF belongs to the line the CR ended
    if (this.afterCR && text.startsWith('\n')) text = text.slice(1);
    this.afterCR = false;
    this.buffer += text;
    let start = 0;
    for (let i = 0; i < this.buffer.length; i += 1) {
      const char = this.buffer[i];
      if (char !== '\n' && char !== '\r') continue;
      this.line(this.buffer.slice(start, i));
      if (char === '\r') {
        if (i + 1 < this.buffer.length) {
          if (this.buffer[i + 1] === '\n') i += 1;
        } else {
          this.afterCR = true;
        }
      }
      start = i + 1;
    }
    this.buffer = this.buffer.slice(start);
  }

  line(line) {
    if (line === '') {
      this.dispatch();
      return;
    }
    if (line.startsWith(':')) {
      this.onComment?.(line.slice(1));
      return;
    }
    const colon = line.indexOf(':');
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'event') this.type = value;
    else if (field === 'data') this.data.push(value);
    else if (field === 'id') {
      if (!value.includes('\0')) this.idBuffer = value;
    } else if (field === 'retry') {
      if (/^\d+$/.test(value)) this.onRetry?.(Number(value));
    }
  }

  dispatch() {
    if (this.idBuffer !== null) this.lastEventId = this.idBuffer;
    const data = this.data.join('\n');
    const type = this.type || 'message';
    const hadData = this.data.length > 0;
    this.data = [];
    this.type = '';
    if (!hadData) return;
    this.onEvent({ type, data, id: this.lastEventId });
  }
}
