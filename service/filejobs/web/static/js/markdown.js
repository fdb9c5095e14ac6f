// Server text with Markdown's inline code and emphasis, as DOM nodes.

import { h } from './dom.js';


/**
 * Server text with Markdown's inline code (`size`) and emphasis (*never*) as DOM nodes: <code> and
 * <em> around text nodes, nothing else (the text is never parsed as HTML).
 */
export function inlineMarkdown(text) {
  const nodes = [];
  String(text ?? '')
    .split(/(`[^`]+`)/)
    .forEach((part, index) => {
      if (index % 2) {
        nodes.push(h('code', {}, part.slice(1, -1)));
        return;
      }
      part.split(/(\*[^*\s](?:[^*]*[^*\s])?\*)/).forEach((piece, inner) => {
        if (inner % 2) nodes.push(h('em', {}, piece.slice(1, -1)));
        else if (piece) nodes.push(piece);
      });
    });
  return nodes;
}
