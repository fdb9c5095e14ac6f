// Server-Sent Events over fetch() (EventSource cannot send Authorization): reconnects with
// backoff, resumes with Last-Event-ID, a watchdog for silent connections.

import { authHeaders, isAbort, responseDetail } from './api.js';
import { requireKey } from './key.js';
import { SseParser } from './sse.js';
import { state } from './state.js';

const STREAM_RETRY_DEFAULT_MS = 2000;
const STREAM_RETRY_MAX_MS = 30000;
// With a keep-alive comment every ~15 s, this much silence means the connection is dead.
const STREAM_SILENCE_MS = 45000;

export class EventStream {
  constructor(url, handlers) {
    this.url = url;
    this.handlers = handlers;
    this.lastEventId = '';
    this.retryMs = STREAM_RETRY_DEFAULT_MS;
    this.failures = 0;
    this.running = false;
    this.controller = null;
    this.generation = 0;
    this.wake = null;
    this.retryAfterMs = 0;
  }

  start() {
    this.stop();
    this.running = true;
    this.generation += 1;
    this.loop(this.generation);
  }

  stop() {
    this.running = false;
    this.generation += 1;
    if (this.controller) this.controller.abort();
    this.controller = null;
    if (this.wake) this.wake();
  }

  /** Forget the position (another key, another set of jobs). */
  reset() {
    this.lastEventId = '';
    this.failures = 0;
  }

  alive(generation) {
    return this.running && generation === this.generation;
  }

  async loop(generation) {
    while (this.alive(generation)) {
      const controller = new AbortController();
      this.controller = controller;
      this.retryAfterMs = 0;
      let opened = false;
      try {
        const headers = authHeaders({ Accept: 'text/event-stream' });
        const resumeFrom = this.lastEventId;
        if (resumeFrom) headers.set('Last-Event-ID', resumeFrom);
        const keyUsed = state.key;
        const response = await fetch(this.url, { headers, signal: controller.signal, cache: 'no-store' });
        if (!this.alive(generation)) return;
        if (response.status === 401) {
          requireKey(await responseDetail(response), keyUsed);
          return;
        }
        if (response.status === 400 && resumeFrom) this.lastEventId = ''; // an id it cannot resume from
        const retryAfter = Number(response.headers.get('retry-after'));
        this.retryAfterMs = Number.isFinite(retryAfter) && retryAfter > 0 ? retryAfter * 1000 : 0;
        const type = response.headers.get('content-type') || '';
        if (!response.ok || !response.body || !type.startsWith('text/event-stream')) {
          throw new Error(`event stream answered ${response.status}`);
        }
        opened = true;
        this.failures = 0;
        this.handlers.onOpen?.(Boolean(resumeFrom));
        await this.read(response.body, controller, generation);
      } catch (error) {
        if (!this.alive(generation)) return;
        if (!isAbort(error)) console.debug('event stream:', error);
      }
      if (!this.alive(generation)) return;
      if (!opened) this.failures += 1;
      this.handlers.onDown?.(opened);
      await this.pause(this.delay(), generation);
    }
  }

  delay() {
    const base = Math.max(250, this.retryMs);
    // the server's retry for the first attempts, doubling after each further failure
    const backoff = Math.min(STREAM_RETRY_MAX_MS, base * 2 ** Math.max(0, Math.min(this.failures, 8) - 1));
    const jittered = Math.round(backoff * (0.75 + Math.random() * 0.5));
    return Math.max(jittered, Math.min(this.retryAfterMs, STREAM_RETRY_MAX_MS * 4)); // 503/429 Retry-After
  }

  pause(ms, generation) {
    return new Promise((resolve) => {
      const wake = () => {
        window.clearTimeout(timer);
        if (this.wake === wake) this.wake = null;
        resolve();
      };
      const timer = window.setTimeout(wake, ms);
      this.wake = wake;
      if (!this.alive(generation)) wake();
    });
  }

  async read(body, controller, generation) {
    const reader = body.getReader();
    const decoder = new TextDecoder('utf-8');
    let watchdog = 0;
    const arm = () => {
      window.clearTimeout(watchdog);
      watchdog = window.setTimeout(() => controller.abort(), STREAM_SILENCE_MS);
    };
    const parser = new SseParser({
      onEvent: (event) => {
        if (event.id) this.lastEventId = event.id;
        this.handlers.onEvent?.(event);
      },
      onRetry: (ms) => {
        this.retryMs = ms;
      },
      onComment: () => {},
    });
    arm();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done || !this.alive(generation)) break;
        arm();
        parser.push(decoder.decode(value, { stream: true }));
      }
      parser.push(decoder.decode());
    } finally {
      window.clearTimeout(watchdog);
      reader.releaseLock?.();
    }
  }
}
