// Announcements for screen readers (the aria-live region), batched.

import { ui } from './state.js';

let pendingAnnouncements = [];
let announceTimer = 0;

export function announce(text) {
  if (!text) return;
  pendingAnnouncements.push(text);
  if (announceTimer) return;
  announceTimer = window.setTimeout(() => {
    const messages = pendingAnnouncements;
    pendingAnnouncements = [];
    announceTimer = 0;
    const joined =
      messages.length > 4
        ? `${messages.length} updates. ${messages.slice(-2).join('. ')}`
        : messages.join('. ');
    ui.announcer.textContent = joined;
  }, 250);
}
