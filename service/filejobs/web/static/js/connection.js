// The connection indicator in the header.

import { announce } from './announce.js';
import { ui } from './state.js';

const CONNECTION_TEXT = {
  connecting: 'Connecting\u2026',
  live: 'Live',
  reconnecting: 'Reconnecting\u2026',
  auth: 'API key needed',
  stopped: 'Not connected',
};

export function setConnection(name) {
  const previous = ui.connection.dataset.state;
  if (previous === name) return;
  ui.connection.dataset.state = name;
  ui.connectionText.textContent = CONNECTION_TEXT[name] || name;
  if (name === 'reconnecting' && previous === 'live') announce('Live updates lost; reconnecting.');
  if (name === 'live' && previous === 'reconnecting') announce('Live updates are back.');
}
