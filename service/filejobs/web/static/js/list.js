// The job list: rows kept up to date from pages, events, uploads and actions.

import { announce } from './announce.js';
import { ApiError, apiJson, errorText, isAbort } from './api.js';
import { details, openDetails, renderDetails } from './details.js';
import { h } from './dom.js';
import { clampProgress, formatBytes, percent, rowTime } from './format.js';
import { ACTIVE, jobName } from './job.js';
import { state, ui } from './state.js';
import { releaseThumb, thumbObserver, wantRowThumb } from './thumbs.js';

const PAGE_SIZE = 50;

const KNOWN_LIMIT = 5000;

function matchesFilter(job) {
  return !state.filter || job.status === state.filter;
}

/** Would this job belong among the rows loaded so far (newest first, by id: UUIDv7)? */
function withinLoadedRange(job) {
  if (!state.listLoaded || !state.nextCursor) return true;
  const last = ui.jobs.lastElementChild;
  return !last || job.id >= last.dataset.jobId;
}

function newRow(job) {
  const open = h('button', { type: 'button', class: 'job-name', 'data-testid': 'job-open' });
  const badge = h('span', { class: 'badge', 'data-testid': 'job-status' });
  const progress = h('progress', { max: '1', value: '0', 'data-testid': 'job-progress' });
  const progressText = h('span', { class: 'progress-text', 'data-testid': 'job-progress-text' });
  const processor = h('span', { class: 'job-processor', 'data-testid': 'job-processor' });
  const size = h('span', { class: 'job-size', 'data-testid': 'job-size' });
  const when = h('span', { class: 'job-time' });
  const message = h('p', { class: 'job-message', 'data-testid': 'job-message' });
  const thumbImg = h('img', {
    class: 'thumb',
    alt: '',
    'data-testid': 'job-thumbnail',
    width: '56',
    height: '56',
    decoding: 'async',
  });
  const thumbSlot = h('div', { class: 'job-thumb', hidden: true }, thumbImg);
  const li = h(
    'li',
    { class: 'job', 'data-testid': 'job-row', dataset: { jobId: job.id } },
    thumbSlot,
    h(
      'div',
      { class: 'job-main' },
      open,
      h(
        'p',
        { class: 'job-meta' },
        processor,
        h('span', { 'aria-hidden': 'true' }, ' \u00b7 '),
        size,
        h('span', { 'aria-hidden': 'true' }, ' \u00b7 '),
        when,
      ),
      message,
    ),
    h('div', { class: 'job-state' }, badge, h('div', { class: 'job-progress' }, progress, progressText)),
  );
  const row = {
    job,
    li,
    open,
    badge,
    progress,
    progressText,
    processor,
    size,
    when,
    message,
    thumbImg,
    thumbSlot,
    thumbHeld: false,
    thumbWanted: false,
  };
  open.addEventListener('click', () => openDetails(row.job.id, open));
  return row;
}

function renderRow(row, job) {
  const previous = row.job;
  row.job = job;
  const name = jobName(job);
  row.li.dataset.status = job.status;
  row.li.dataset.version = String(job.version ?? '');
  row.li.classList.toggle('is-active', ACTIVE.has(job.status));
  row.open.textContent = name;
  row.open.setAttribute('aria-label', `${name}, ${job.status}. Show details`);
  row.badge.textContent = job.status;
  row.badge.className = `badge badge-${job.status}`;
  const value = clampProgress(job.progress);
  row.progress.value = value;
  row.progress.setAttribute('aria-label', `Progress of ${name}`);
  row.progressText.textContent = `${percent(job.progress)}%`;
  row.processor.textContent = job.processor || '';
  row.size.textContent = formatBytes(job.file?.size);
  if (!previous || previous.created_at !== job.created_at || !row.when.firstChild) {
    row.when.replaceChildren(rowTime(job.created_at) || '');
  }
  const note = job.message && job.message !== job.status ? job.message : '';
  const messageText = job.error ? `${job.error.code}: ${job.error.message}` : note;
  row.message.textContent = messageText;
  row.message.hidden = !messageText;
  row.message.classList.toggle('is-error', Boolean(job.error));
  wantRowThumb(row);
}

function insertRow(job) {
  const row = newRow(job);
  renderRow(row, job);
  state.rows.set(job.id, row);
  let before = null;
  for (const child of ui.jobs.children) {
    if (child.dataset.jobId < job.id) {
      before = child;
      break;
    }
  }
  ui.jobs.insertBefore(row.li, before);
  updateListState();
  return row;
}

function removeRow(id) {
  const row = state.rows.get(id);
  if (!row) return;
  const hadFocus = row.li.contains(document.activeElement);
  const next = row.li.nextElementSibling || row.li.previousElementSibling;
  if (thumbObserver) thumbObserver.unobserve(row.li);
  row.li.remove();
  state.rows.delete(id);
  if (row.thumbHeld) releaseThumb(id);
  row.thumbImg.removeAttribute('src');
  if (hadFocus) {
    const target = next && next.querySelector('.job-name');
    (target || ui.jobsHeading).focus();
  }
  updateListState();
}

export function clearJobs() {
  if (state.listController) state.listController.abort();
  state.listController = null;
  for (const id of [...state.rows.keys()]) removeRow(id);
  state.known.clear();
  state.nextCursor = null;
  state.listLoaded = false;
  state.reloadTouched = null;
  updateListState();
}

export function updateListState() {
  ui.loadMore.hidden = !state.nextCursor;
  if (state.needKey) return;
  if (!state.listLoaded) {
    ui.jobsState.hidden = state.rows.size > 0;
    if (!ui.jobsState.dataset.error) ui.jobsState.textContent = 'Loading jobs\u2026';
    return;
  }
  delete ui.jobsState.dataset.error;
  ui.jobsState.hidden = state.rows.size > 0;
  ui.jobsState.textContent = state.filter
    ? `No ${state.filter} jobs.`
    : 'No jobs yet: upload a file to start one.';
}

/** Hold the newest body of a job; the oldest bodies of jobs not on the page are let go past
 * KNOWN_LIMIT (a long session would otherwise keep every job it ever heard of). */
function remember(job) {
  state.known.delete(job.id);
  state.known.set(job.id, job);
  if (state.known.size <= KNOWN_LIMIT) return;
  for (const id of state.known.keys()) {
    if (state.known.size <= KNOWN_LIMIT * 0.9) break;
    if (!state.rows.has(id) && id !== details.id && !state.reloadTouched?.has(id)) state.known.delete(id);
  }
}

function isNotNewer(job, held) {
  return typeof job.version === 'number' && typeof held.version === 'number' && job.version <= held.version;
}

/**
 * Take in a job body from an event, an upload, an action or a list page: an event (or answer)
 * counts only if its version is newer than the one held; a page never overrides a newer state.
 */
export function applyJob(job, source) {
  if (!job || typeof job.id !== 'string' || state.deleted.has(job.id)) return;
  const held = state.known.get(job.id);
  let current = job;
  let changed = true;
  if (held && isNotNewer(job, held)) {
    if (source !== 'page') return;
    current = held;
    changed = false;
  } else {
    remember(job);
  }
  if (state.reloadTouched && source !== 'page') state.reloadTouched.add(job.id);

  const row = state.rows.get(current.id);
  if (!matchesFilter(current)) {
    if (row) removeRow(current.id);
  } else if (row) {
    if (changed || row.job !== current) renderRow(row, current);
  } else if (source === 'page' || (!state.reloadTouched && withinLoadedRange(current))) {
    // (while a reload is in flight, where a new row belongs is known only once its page is in)
    insertRow(current);
  }

  if (changed && held && source === 'event' && held.status !== current.status) {
    const error = current.error ? `: ${current.error.message}` : '';
    announce(`${jobName(current)} ${current.status}${error}`);
  }
  if (changed && details.id === current.id) renderDetails();
}

export function jobDeleted(id, fromEvent) {
  const job = state.known.get(id);
  state.deleted.add(id);
  if (state.deleted.size > KNOWN_LIMIT) state.deleted.delete(state.deleted.values().next().value);
  state.known.delete(id);
  removeRow(id);
  if (details.id === id) renderDetails();
  if (fromEvent && job) announce(`${jobName(job)} was deleted.`);
}

async function fetchPage(cursor, signal) {
  const query = new URLSearchParams({ limit: String(PAGE_SIZE) });
  if (state.filter) query.set('status', state.filter);
  if (cursor) query.set('cursor', cursor);
  return apiJson(`/v1/jobs?${query}`, { signal });
}

export async function reloadList() {
  if (state.needKey) return;
  if (state.listController) state.listController.abort();
  const controller = new AbortController();
  state.listController = controller;
  const touched = new Set();
  state.reloadTouched = touched;
  updateListState();
  ui.refresh.disabled = true;
  try {
    const page = await fetchPage(null, controller.signal);
    if (state.listController !== controller) return;
    const items = Array.isArray(page.items) ? page.items : [];
    const inPage = new Set(items.map((job) => job.id));
    for (const id of [...state.rows.keys()]) {
      if (!inPage.has(id) && !touched.has(id)) removeRow(id);
    }
    state.nextCursor = page.next_cursor || null;
    state.listLoaded = true;
    state.reloadTouched = null;
    for (const job of items) applyJob(job, 'page');
    // Jobs that changed while the page was on its way and are not on it: newer ones (made
    // since) go in; older ones wait for "Load more".
    for (const id of touched) {
      const job = state.known.get(id);
      if (inPage.has(id) || !job) continue;
      const row = state.rows.get(id);
      if (matchesFilter(job) && withinLoadedRange(job)) {
        if (row) renderRow(row, job);
        else insertRow(job);
      } else if (row) removeRow(id);
    }
    updateListState();
  } catch (error) {
    if (isAbort(error) || state.listController !== controller) return;
    if (!(error instanceof ApiError && error.status === 401)) {
      ui.jobsState.dataset.error = 'true';
      ui.jobsState.textContent = `Could not load the jobs: ${errorText(error)}`;
      ui.jobsState.hidden = false;
    }
  } finally {
    if (state.listController === controller) {
      state.listController = null;
      if (state.reloadTouched === touched) state.reloadTouched = null;
    }
    ui.refresh.disabled = false;
  }
}

export async function loadMore() {
  if (!state.nextCursor || state.listController) return;
  const controller = new AbortController();
  state.listController = controller;
  ui.loadMore.disabled = true;
  const before = new Set(state.rows.keys());
  try {
    const page = await fetchPage(state.nextCursor, controller.signal);
    if (state.listController !== controller) return;
    state.nextCursor = page.next_cursor || null;
    const items = Array.isArray(page.items) ? page.items : [];
    for (const job of items) applyJob(job, 'page');
    updateListState();
    announce(`${items.length} more ${items.length === 1 ? 'job' : 'jobs'} loaded.`);
    if (ui.loadMore.hidden) {
      const first = [...ui.jobs.children].find((li) => !before.has(li.dataset.jobId));
      (first?.querySelector('.job-name') || ui.jobsHeading).focus();
    }
  } catch (error) {
    if (!isAbort(error)) announce(`Could not load more jobs: ${errorText(error)}`);
  } finally {
    if (state.listController === controller) state.listController = null;
    ui.loadMore.disabled = false;
  }
}

export function changeFilter() {
  state.filter = ui.statusFilter.value;
  for (const id of [...state.rows.keys()]) removeRow(id);
  state.nextCursor = null;
  state.listLoaded = false;
  reloadList();
  announce(state.filter ? `Showing ${state.filter} jobs.` : 'Showing all jobs.');
}
