// The details dialog and its actions (download, cancel, retry, delete).

import { announce } from './announce.js';
import { ApiError, api, apiJson, errorText, isAbort } from './api.js';
import { $, h } from './dom.js';
import { clampProgress, formatBytes, percent, timeElement } from './format.js';
import { ACTIVE, RETRYABLE, isImageJob, jobName, jobPath } from './job.js';
import { applyJob, jobDeleted } from './list.js';
import { state, ui } from './state.js';
import { acquireThumb, releaseThumb } from './thumbs.js';

export const details = {
  id: null,
  opener: null,
  thumbId: null,
  busy: false,
  el: {
    title: $('details-title'),
    gone: $('details-gone'),
    status: $('details-status'),
    progress: $('details-progress'),
    progressLabel: $('details-progress-label'),
    message: $('details-message'),
    download: $('action-download'),
    cancel: $('action-cancel'),
    retry: $('action-retry'),
    remove: $('action-delete'),
    confirm: $('delete-confirm'),
    confirmYes: $('delete-yes'),
    confirmNo: $('delete-no'),
    feedback: $('details-feedback'),
    figure: $('details-figure'),
    thumb: $('details-thumb'),
    figcaption: $('details-figcaption'),
    errorSection: $('details-error-section'),
    errorCode: $('details-error-code'),
    errorMessage: $('details-error-message'),
    resultSection: $('details-result-section'),
    result: $('details-result'),
    info: $('details-info'),
    file: $('details-file'),
    params: $('details-params'),
    close: $('details-close'),
  },
};

function facts(dl, pairs) {
  dl.replaceChildren();
  for (const [term, value, testid] of pairs) {
    const dd = h('dd', testid ? { 'data-testid': testid } : {});
    dd.append(value instanceof Node ? value : String(value ?? '\u2014'));
    dl.append(h('div', { class: 'fact' }, h('dt', {}, term), dd));
  }
}

// The job's webhook notification (GET /v1/webhooks/{id}/deliveries has each attempt).
const NOTIFICATION_TEXT = {
  pending: 'pending (being sent or retried)',
  delivered: 'delivered',
  failed: 'failed (see the webhook\u2019s deliveries)',
};

function notificationText(state) {
  if (!state) return 'none';
  return NOTIFICATION_TEXT[state] || state;
}

function setDetailsThumb(job) {
  const want = job && isImageJob(job) ? job.id : null;
  if (details.thumbId === want) return;
  if (details.thumbId) releaseThumb(details.thumbId);
  details.thumbId = want;
  details.el.thumb.removeAttribute('src');
  details.el.figure.hidden = true;
  if (!want) return;
  details.el.thumb.alt = `Thumbnail of ${jobName(job)}`;
  details.el.figcaption.textContent = job.result?.thumbnail
    ? `Result image, ${job.result.thumbnail.width} by ${job.result.thumbnail.height} pixels`
    : 'Result image';
  acquireThumb(want).then((url) => {
    if (details.thumbId !== want || !url) return;
    details.el.thumb.src = url;
    details.el.figure.hidden = false;
  });
}

export function renderDetails() {
  const e = details.el;
  const job = state.known.get(details.id);
  const gone = !job;
  e.gone.hidden = !gone;
  if (gone) {
    for (const button of [e.download, e.cancel, e.retry, e.remove]) button.hidden = true;
    e.confirm.hidden = true;
    setDetailsThumb(null);
    if (!ui.dialog.contains(document.activeElement) || document.activeElement.hidden) e.close.focus();
    return;
  }
  const name = jobName(job);
  e.title.textContent = name;
  ui.dialog.dataset.jobId = job.id;
  ui.dialog.dataset.status = job.status;
  e.status.textContent = job.status;
  e.status.className = `badge badge-${job.status}`;
  e.progress.value = clampProgress(job.progress);
  e.progressLabel.textContent = `${percent(job.progress)}% done`;
  e.message.textContent = job.message || '';
  e.message.hidden = !job.message;

  e.download.hidden = job.status !== 'succeeded';
  e.cancel.hidden = !ACTIVE.has(job.status);
  e.retry.hidden = !RETRYABLE.has(job.status);
  e.remove.hidden = false;
  for (const button of [e.download, e.cancel, e.retry, e.remove, e.confirmYes])
    button.disabled = details.busy;

  e.errorSection.hidden = !job.error;
  e.errorCode.textContent = job.error ? job.error.code : '';
  e.errorMessage.textContent = job.error ? job.error.message : '';

  const hasResult = job.result !== null && job.result !== undefined;
  e.resultSection.hidden = !hasResult;
  e.result.textContent = hasResult ? JSON.stringify(job.result, null, 2) : '';

  facts(e.info, [
    ['Status', job.status, 'details-info-status'],
    ['Processor', job.processor, 'details-info-processor'],
    ['Attempts', job.attempts, 'details-info-attempts'],
    ...(job.reused_from ? [['Reused from', reusedLink(job.reused_from), 'details-reused-from']] : []),
    ['Created', timeElement(job.created_at), 'details-created'],
    ['Started', timeElement(job.started_at), 'details-started'],
    ['Finished', timeElement(job.finished_at), 'details-finished'],
    ['Webhook', notificationText(job.notification), 'details-notification'],
    ['Updated', timeElement(job.updated_at), 'details-updated'],
    ['Version', job.version, 'details-version'],
    ['Job id', h('code', {}, job.id), 'details-id'],
  ]);
  const file = job.file || {};
  facts(e.file, [
    ['Name', file.name, 'details-file-name'],
    [
      'Size',
      typeof file.size === 'number'
        ? `${formatBytes(file.size)} (${file.size.toLocaleString()} bytes)`
        : '\u2014',
      'details-file-size',
    ],
    ['Type', file.content_type, 'details-file-type'],
    ['SHA-256', h('code', { class: 'hash' }, file.sha256 || '\u2014'), 'details-file-sha256'],
  ]);
  e.params.textContent = JSON.stringify(job.params ?? {}, null, 2);
  setDetailsThumb(job);

  const focused = document.activeElement;
  if (
    ui.dialog.open &&
    (!focused || focused === document.body || (ui.dialog.contains(focused) && focused.closest('[hidden]')))
  ) {
    e.close.focus();
  }
}

// A reused job (issue 19) finished at once with the kept result of an earlier job of the same
// file, processor and params: a link opens that job here (fetched when this page has not seen it).
function reusedLink(id) {
  return h(
    'a',
    {
      href: `#job-${encodeURIComponent(id)}`,
      class: 'reused-from',
      title: 'The job whose kept result this job reused (it did not run again)',
      onclick: (event) => {
        event.preventDefault();
        showJob(id, event.currentTarget);
      },
    },
    h('code', {}, id),
  );
}

async function showJob(id, link) {
  if (!state.known.has(id)) {
    try {
      applyJob(await apiJson(jobPath(id)), 'action');
    } catch (error) {
      if (isAbort(error)) return;
      const gone = error instanceof ApiError && error.status === 404;
      details.el.feedback.textContent = gone
        ? 'The job it reused has been deleted.'
        : `Could not load the job it reused: ${errorText(error)}`;
      return;
    }
  }
  openDetails(id, link);
}

export function openDetails(id, opener) {
  details.id = id;
  details.opener = opener || null;
  details.busy = false;
  details.el.confirm.hidden = true;
  details.el.feedback.textContent = '';
  renderDetails();
  if (!ui.dialog.open) ui.dialog.showModal();
  details.el.close.focus();
}

function closedDetails() {
  const id = details.id;
  setDetailsThumb(null);
  details.id = null;
  delete ui.dialog.dataset.jobId;
  delete ui.dialog.dataset.status;
  const opener = details.opener;
  details.opener = null;
  // The browser gives focus back to where it was before the dialog opened; only when that is
  // gone (the job was deleted, its row filtered away) does focus need a new home.
  const focused = document.activeElement;
  if (focused && focused !== document.body && !ui.dialog.contains(focused)) return;
  const target =
    (opener && opener.isConnected && opener) || (id && state.rows.get(id)?.open) || ui.jobsHeading;
  target.focus();
}

function fileNameFromDisposition(header) {
  if (!header) return '';
  const star = /filename\*\s*=\s*([^']*)'[^']*'([^;]+)/i.exec(header);
  if (star) {
    try {
      return decodeURIComponent(star[2].trim().replace(/^"|"$/g, ''));
    } catch {
      // fall through to the plain form
    }
  }
  const plain = /filename\s*=\s*("((?:\\.|[^"\\])*)"|[^;]+)/i.exec(header);
  if (!plain) return '';
  return (plain[2] !== undefined ? plain[2].replace(/\\(.)/g, '$1') : plain[1]).trim();
}

function safeDownloadName(name) {
  const cleaned = String(name)
    .replace(/[\\/:*?"<>|\u0000-\u001f]/g, '_')
    .trim();
  return cleaned || 'result';
}

async function detailsAction(run) {
  if (details.busy) return;
  details.busy = true;
  details.el.feedback.textContent = '';
  renderDetails();
  try {
    await run();
  } catch (error) {
    if (!isAbort(error)) details.el.feedback.textContent = errorText(error);
  } finally {
    details.busy = false;
    if (details.id) renderDetails();
  }
}

async function downloadResult() {
  const id = details.id;
  const job = state.known.get(id);
  if (!job) return;
  await detailsAction(async () => {
    const response = await api(jobPath(id, '/result'), { accept: '*/*' });
    const blob = await response.blob();
    const type = response.headers.get('content-type') || '';
    let name = fileNameFromDisposition(response.headers.get('content-disposition'));
    if (!name) {
      const stem = jobName(job).replace(/\.[^.]*$/, '') || 'result';
      name = type.includes('json') ? `${stem}.result.json` : `${stem}.result`;
    }
    const url = URL.createObjectURL(blob);
    const link = h('a', { href: url, download: safeDownloadName(name), hidden: true });
    document.body.append(link);
    link.click();
    link.remove();
    window.setTimeout(() => URL.revokeObjectURL(url), 10000);
    announce(`Downloading ${name}.`);
  });
}

async function postAction(suffix, doneText) {
  const id = details.id;
  await detailsAction(async () => {
    const job = await apiJson(jobPath(id, suffix), { method: 'POST' });
    applyJob(job, 'action');
    announce(`${jobName(job)}: ${doneText}`);
  });
}

async function deleteJob() {
  const id = details.id;
  const job = state.known.get(id);
  await detailsAction(async () => {
    try {
      await api(jobPath(id), { method: 'DELETE', accept: '' });
    } catch (error) {
      if (!(error instanceof ApiError && error.status === 404)) throw error;
    }
    jobDeleted(id, false);
    announce(`${jobName(job)} deleted.`);
    if (ui.dialog.open) ui.dialog.close();
  });
}

export function setupDetails() {
  const e = details.el;
  e.close.addEventListener('click', () => ui.dialog.close());
  ui.dialog.addEventListener('close', closedDetails);
  ui.dialog.addEventListener('click', (event) => {
    if (event.target !== ui.dialog) return;
    const box = ui.dialog.getBoundingClientRect();
    const inside =
      event.clientX >= box.left &&
      event.clientX <= box.right &&
      event.clientY >= box.top &&
      event.clientY <= box.bottom;
    if (!inside) ui.dialog.close(); // a click on the backdrop
  });
  e.download.addEventListener('click', downloadResult);
  e.cancel.addEventListener('click', () => postAction('/cancel', 'cancel requested.'));
  e.retry.addEventListener('click', () => postAction('/retry', 'queued again.'));
  e.remove.addEventListener('click', () => {
    e.confirm.hidden = false;
    e.confirmNo.focus();
  });
  e.confirmNo.addEventListener('click', () => {
    e.confirm.hidden = true;
    e.remove.focus();
  });
  e.confirmYes.addEventListener('click', deleteJob);
}
