// Big files go with tus (tus-js-client, vendored in /static/vendor/tus-js-client/, loaded as a
// script of this origin the first time it is needed: window.tus), in chunks, so a dropped connection or a page reload costs at most one chunk. The browser keeps each
// unfinished upload's URL (tus-js-client's localStorage entries, "tus::…"); after a reload the page
// lists them and resumes one when the same file is chosen again with the same processor and params.
//
// ?resumable-threshold=BYTES and ?resumable-chunk=BYTES on the page's URL change the defaults
// (64 MiB, 64 MiB): the browser tests use small files.

import { announce } from './announce.js';
import { apiJson, errorText, problemDetail } from './api.js';
import { h } from './dom.js';
import { formatBytes } from './format.js';
import { requireKey } from './key.js';
import { applyJob } from './list.js';
import { state, ui } from './state.js';

const MiB = 1024 * 1024;
const ENDPOINT = '/v1/uploads';
const query = new URLSearchParams(window.location.search);
const THRESHOLD = positive(query.get('resumable-threshold')) ?? 64 * MiB;
const CHUNK_SIZE = positive(query.get('resumable-chunk')) ?? 64 * MiB;

function positive(value) {
  const number = Number(value);
  return value && Number.isInteger(number) && number > 0 ? number : null;
}

const LIBRARY = '/static/vendor/tus-js-client/tus.min.js';
let loading = null;

function tus() {
  return window.tus && window.tus.isSupported ? window.tus : null;
}

/** tus-js-client, loaded once (null where it cannot load or the browser lacks what it needs). */
export function loadTus() {
  if (window.tus) return Promise.resolve(tus());
  if (!loading) {
    loading = new Promise((resolve) => {
      const script = document.createElement('script');
      script.src = LIBRARY;
      script.addEventListener('load', () => resolve(tus()));
      script.addEventListener('error', () => {
        loading = null; // another try with the next big file
        script.remove();
        resolve(null);
      });
      document.head.append(script);
    });
  }
  return loading;
}

/** Whether ``file`` is big enough for tus (the caller falls back to a plain upload if it cannot load). */
export function isResumable(file) {
  return file.size >= THRESHOLD;
}

// The file's identity only; whether a stored upload fits (the same processor and params) is
// decided from its metadata, so another choice starts a new upload instead.
function fingerprint(file) {
  return Promise.resolve(['filejobs', file.name, file.type, file.size, file.lastModified].join('/'));
}

function tusHeaders() {
  return state.key ? { Authorization: `Bearer ${state.key}` } : {};
}

function sameChoice(previous, metadata) {
  const stored = previous.metadata || {};
  return (stored.processor || '') === (metadata.processor || '') && (stored.params || '') === metadata.params;
}

export function uploadResumable({ file, processor, params, item }) {
  return new Promise((resolve) => {
    const keyUsed = state.key;
    const metadata = { filename: file.name, params: JSON.stringify(params) };
    if (processor) metadata.processor = processor;
    if (file.type) metadata.filetype = file.type;
    let jobUrl = '';
    let ended = false;
    const end = () => {
      ended = true;
      removeOffer(upload.url);
      resolve();
    };
    const upload = new (tus().Upload)(file, {
      endpoint: ENDPOINT,
      chunkSize: CHUNK_SIZE,
      retryDelays: [0, 1000, 3000, 5000, 10000],
      metadata,
      headers: tusHeaders(),
      fingerprint,
      storeFingerprintForResuming: true,
      removeFingerprintOnSuccess: true,
      onProgress(sent, total) {
        item.progress(sent, total);
      },
      onAfterResponse(_request, response) {
        const job = response.getHeader('Filejobs-Job');
        if (job) jobUrl = job;
      },
      onSuccess() {
        if (!jobUrl) {
          item.failed('The server answered without a job.');
          end();
          return;
        }
        apiJson(jobUrl)
          .then((job) => {
            applyJob(job, 'upload');
            item.done(job);
            announce(`${file.name} uploaded; job ${job.status}.`);
          })
          .catch((error) => item.failed(`Uploaded, but the job could not be read: ${errorText(error)}`))
          .finally(end);
      },
      onError(error) {
        if (ended) return;
        const response = error.originalResponse;
        if (response) {
          const status = response.getStatus();
          const detail = problemDetail(status, response.getBody(), response.getHeader('Content-Type') || '');
          if (status === 401) requireKey(detail, keyUsed);
          item.failed(`Not accepted (${status}): ${detail}`);
          announce(`${file.name} was not accepted: ${detail}`);
        } else {
          item.failed('The upload stopped: the server cannot be reached. Choose the file again to resume.');
          announce(`The upload of ${file.name} stopped.`);
        }
        ended = true;
        resolve();
      },
    });
    item.onCancel = () => {
      ended = true;
      upload.abort(true).catch(() => {}); // true: terminate it on the server (DELETE)
      item.failed('Upload cancelled.');
      resolve();
    };
    item.started();
    upload
      .findPreviousUploads()
      .then((previous) => {
        const match = previous.find((entry) => sameChoice(entry, metadata));
        if (match) {
          upload.resumeFromPreviousUpload(match);
          item.resuming();
        }
      })
      .catch(() => {}) // nothing stored: a new upload
      .finally(() => {
        if (!ended) upload.start();
      });
  });
}

// ---- the offer after a reload ------------------------------------------------------------------

function removeOffer(url) {
  if (!url) return;
  for (const li of ui.resumableList.querySelectorAll('li')) {
    if (li.dataset.url === url) li.remove();
  }
  ui.resumable.hidden = ui.resumableList.children.length === 0;
}

/** The server's offset of an upload; 'gone' when it no longer has it; null when it cannot tell now. */
async function storedOffset(url) {
  try {
    const response = await fetch(url, {
      method: 'HEAD',
      headers: { ...tusHeaders(), 'Tus-Resumable': '1.0.0' },
    });
    if (response.status === 404 || response.status === 410) return 'gone';
    if (!response.ok) return null;
    const offset = Number.parseInt(response.headers.get('Upload-Offset') || '', 10);
    return Number.isNaN(offset) ? null : offset;
  } catch {
    return null;
  }
}

/** List the uploads this browser left unfinished that the server still holds (the others are forgotten). */
export async function offerResumes() {
  let stored = false;
  try {
    stored = Object.keys(localStorage).some((key) => key.startsWith('tus::'));
  } catch {
    return; // no storage: nothing was kept to resume
  }
  if (!stored) return; // the library is not even loaded
  const lib = await loadTus();
  if (!lib) return;
  let entries = [];
  try {
    entries = await lib.defaultOptions.urlStorage.findAllUploads();
  } catch {
    return;
  }
  ui.resumableList.replaceChildren();
  for (const entry of entries) {
    const offset = await storedOffset(entry.uploadUrl);
    if (offset === 'gone') {
      lib.defaultOptions.urlStorage.removeUpload(entry.urlStorageKey).catch(() => {});
      continue;
    }
    if (offset === null) continue; // another key's, or the server is away: offered another time
    const name = (entry.metadata && entry.metadata.filename) || 'a file';
    const processor = (entry.metadata && entry.metadata.processor) || 'the default processor';
    const forget = h(
      'button',
      { type: 'button', class: 'button button-small button-quiet', 'aria-label': `Forget the upload of ${name}` },
      'Forget',
    );
    const li = h(
      'li',
      { class: 'resumable-item', 'data-testid': 'resumable-item', dataset: { url: entry.uploadUrl } },
      h('span', { class: 'upload-name' }, name),
      ` \u2014 ${formatBytes(offset)} of ${formatBytes(entry.size)} stored, for ${processor}. `,
      forget,
    );
    forget.addEventListener('click', () => {
      lib.Upload.terminate(entry.uploadUrl, { headers: tusHeaders() }).catch(() => {});
      lib.defaultOptions.urlStorage.removeUpload(entry.urlStorageKey).catch(() => {});
      li.remove();
      ui.resumable.hidden = ui.resumableList.children.length === 0;
      ui.fileInput.focus();
    });
    ui.resumableList.append(li);
  }
  ui.resumable.hidden = ui.resumableList.children.length === 0;
  if (!ui.resumable.hidden) announce('Unfinished uploads can be resumed: choose the same files again.');
}
