// A session under one key: the event stream to /v1/events, the processors and the job list.

import { setConnection } from './connection.js';
import { EventStream } from './event-stream.js';
import { applyJob, jobDeleted, reloadList, updateListState } from './list.js';
import { loadProcessors } from './params-form.js';
import { state, ui } from './state.js';

const LIST_FALLBACK_MS = 3000;

let listFallbackTimer = 0;

export const stream = new EventStream('/v1/events', {
  onOpen(resumed) {
    setConnection('live');
    window.clearTimeout(listFallbackTimer);
    // A fresh stream carries changes from now on: the list is read after it opened, so nothing
    // falls between the two. A resumed one replays what changed since its last id.
    if (!resumed || !state.listLoaded) reloadList();
  },
  onDown() {
    setConnection('reconnecting');
    if (!state.listLoaded && !state.listController && !state.needKey) reloadList();
  },
  onEvent(event) {
    let data;
    try {
      data = JSON.parse(event.data);
    } catch {
      return;
    }
    if (event.type === 'job') applyJob(data, 'event');
    else if (event.type === 'deleted') {
      if (data && typeof data.id === 'string') jobDeleted(data.id, true);
    } else if (event.type === 'reset') reloadList();
  },
});

export function start() {
  state.needKey = false;
  ui.keySection.hidden = true;
  delete ui.jobsState.dataset.error;
  state.listLoaded = false;
  updateListState();
  setConnection('connecting');
  loadProcessors();
  stream.reset();
  stream.start();
  // Should the stream not open soon (a proxy holding it back), list the jobs anyway.
  window.clearTimeout(listFallbackTimer);
  listFallbackTimer = window.setTimeout(() => {
    if (!state.listLoaded && !state.listController && !state.needKey) reloadList();
  }, LIST_FALLBACK_MS);
}
