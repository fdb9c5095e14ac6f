// Choosing files (input or drop) and uploading them, a few at a time, with progress.

import { announce } from './announce.js';
import { problemDetail } from './api.js';
import { h } from './dom.js';
import { formatBytes } from './format.js';
import { requireKey } from './key.js';
import { applyJob } from './list.js';
import { PROCESSOR_STORAGE, collectParams } from './params-form.js';
import { isResumable, loadTus, uploadResumable } from './resumable.js';
import { state, ui } from './state.js';

const PARALLEL_UPLOADS = 3;
const DONE_UPLOAD_LINGER_MS = 6000;

export function showSelectedFiles() {
  const files = [...(ui.fileInput.files || [])];
  ui.selectedFiles.replaceChildren();
  if (!files.length) {
    ui.selectedFiles.textContent = 'No files chosen.';
    return;
  }
  const total = files.reduce((sum, file) => sum + file.size, 0);
  ui.selectedFiles.append(
    `${files.length} ${files.length === 1 ? 'file' : 'files'} chosen (${formatBytes(total)}): `,
    files.map((file) => file.name).join(', '),
  );
}

export function setupDropzone() {
  let depth = 0;
  const hasFiles = (event) => [...(event.dataTransfer?.types || [])].includes('Files');
  ui.dropzone.addEventListener('dragenter', (event) => {
    if (!hasFiles(event)) return;
    event.preventDefault();
    depth += 1;
    ui.dropzone.classList.add('is-dragging');
  });
  ui.dropzone.addEventListener('dragover', (event) => {
    if (!hasFiles(event)) return;
    event.preventDefault();
    event.dataTransfer.dropEffect = 'copy';
  });
  ui.dropzone.addEventListener('dragleave', () => {
    depth = Math.max(0, depth - 1);
    if (!depth) ui.dropzone.classList.remove('is-dragging');
  });
  ui.dropzone.addEventListener('drop', (event) => {
    event.preventDefault();
    depth = 0;
    ui.dropzone.classList.remove('is-dragging');
    const files = event.dataTransfer?.files;
    if (files && files.length) {
      ui.fileInput.files = files;
      showSelectedFiles();
      announce(`${files.length} ${files.length === 1 ? 'file' : 'files'} chosen.`);
    }
  });
  // a file dropped beside the zone must not replace the page
  for (const type of ['dragover', 'drop']) {
    window.addEventListener(type, (event) => {
      if (hasFiles(event) && !ui.dropzone.contains(event.target)) event.preventDefault();
    });
  }
}

const uploadQueue = [];
let activeUploads = 0;

function updateUploadsHeading() {
  ui.uploadsHeading.hidden = ui.uploads.children.length === 0;
}

function uploadItem(file) {
  const progress = h('progress', {
    max: String(Math.max(1, file.size)),
    value: '0',
    'aria-label': `Upload of ${file.name}`,
  });
  const status = h('span', { class: 'upload-status', 'data-testid': 'upload-status' }, 'Waiting\u2026');
  const button = h(
    'button',
    {
      type: 'button',
      class: 'button button-small button-quiet',
      'aria-label': `Cancel upload of ${file.name}`,
    },
    'Cancel',
  );
  const li = h(
    'li',
    { class: 'upload', 'data-testid': 'upload-item', 'data-state': 'waiting' },
    h('div', { class: 'upload-line' }, h('span', { class: 'upload-name' }, file.name), button),
    progress,
    status,
  );
  ui.uploads.prepend(li);
  updateUploadsHeading();
  let onCancel = () => {};
  const remove = () => {
    const hadFocus = li.contains(document.activeElement);
    li.remove();
    updateUploadsHeading();
    if (hadFocus) ui.fileInput.focus();
  };
  button.addEventListener('click', () => {
    if (li.dataset.state === 'waiting' || li.dataset.state === 'uploading') onCancel();
    else remove();
  });
  const finish = (stateName, text) => {
    li.dataset.state = stateName;
    status.textContent = text;
    button.textContent = 'Dismiss';
    button.setAttribute('aria-label', `Dismiss upload of ${file.name}`);
  };
  return {
    set onCancel(fn) {
      onCancel = fn;
    },
    started() {
      li.dataset.state = 'uploading';
      status.textContent = 'Uploading\u2026';
    },
    resuming() {
      li.dataset.resumed = 'true';
      status.textContent = 'Resuming where it stopped\u2026';
    },
    progress(loaded, total) {
      progress.max = Math.max(1, total);
      progress.value = Math.min(loaded, total);
      status.textContent = `${formatBytes(loaded)} of ${formatBytes(total)} (${Math.round((loaded / Math.max(1, total)) * 100)}%)`;
    },
    done(job) {
      progress.value = progress.max;
      finish('done', `Uploaded: job ${job.status}.`);
      window.setTimeout(() => {
        if (!li.contains(document.activeElement)) remove();
      }, DONE_UPLOAD_LINGER_MS);
    },
    failed(text) {
      li.classList.add('is-error');
      finish('failed', text);
    },
  };
}

function queueUploads(files, processor, params) {
  for (const file of files) uploadQueue.push({ file, processor, params, item: uploadItem(file) });
  pumpUploads();
}

function pumpUploads() {
  while (activeUploads < PARALLEL_UPLOADS && uploadQueue.length) {
    const task = uploadQueue.shift();
    activeUploads += 1;
    uploadOne(task).finally(() => {
      activeUploads -= 1;
      pumpUploads();
    });
  }
}

async function uploadOne(task) {
  if (isResumable(task.file) && (await loadTus())) return uploadResumable(task);
  return uploadPlain(task);
}

function uploadPlain({ file, processor, params, item }) {
  return new Promise((resolve) => {
    const xhr = new XMLHttpRequest();
    const keyUsed = state.key;
    let cancelled = false;
    item.onCancel = () => {
      cancelled = true;
      xhr.abort();
    };
    xhr.open('POST', '/v1/jobs');
    xhr.setRequestHeader('Accept', 'application/json');
    if (keyUsed) xhr.setRequestHeader('Authorization', `Bearer ${keyUsed}`);
    xhr.upload.addEventListener('progress', (event) => {
      if (event.lengthComputable) item.progress(event.loaded, event.total);
    });
    xhr.addEventListener('load', () => {
      const contentType = xhr.getResponseHeader('content-type') || '';
      if (xhr.status === 202 || xhr.status === 200) {
        let job = null;
        try {
          job = JSON.parse(xhr.responseText);
        } catch {
          job = null;
        }
        if (job && job.id) {
          applyJob(job, 'upload');
          item.done(job);
          announce(`${file.name} uploaded; job ${job.status}.`);
        } else item.failed('The server answered without a job.');
      } else {
        const detail = problemDetail(xhr.status, xhr.responseText, contentType);
        if (xhr.status === 401) requireKey(detail, keyUsed);
        item.failed(`Not accepted (${xhr.status}): ${detail}`);
        announce(`${file.name} was not accepted: ${detail}`);
      }
      resolve();
    });
    xhr.addEventListener('error', () => {
      item.failed('The upload failed: the server cannot be reached.');
      announce(`The upload of ${file.name} failed.`);
      resolve();
    });
    xhr.addEventListener('abort', () => {
      item.failed(cancelled ? 'Upload cancelled.' : 'The upload was interrupted.');
      resolve();
    });
    const form = new FormData();
    if (processor) form.append('processor', processor);
    form.append('params', JSON.stringify(params));
    form.append('file', file, file.name);
    item.started();
    xhr.send(form);
  });
}

export function submitUpload(event) {
  event.preventDefault();
  ui.uploadError.textContent = '';
  const files = [...(ui.fileInput.files || [])];
  if (!files.length) {
    ui.uploadError.textContent = 'Choose or drop at least one file first.';
    ui.fileInput.focus();
    return;
  }
  const params = collectParams();
  if (params === null) return;
  const processor = ui.processor.value;
  if (processor) {
    try {
      sessionStorage.setItem(PROCESSOR_STORAGE, processor);
    } catch {
      // not remembered; harmless
    }
  }
  queueUploads(files, processor, params);
  ui.fileInput.value = '';
  showSelectedFiles();
  announce(`Uploading ${files.length} ${files.length === 1 ? 'file' : 'files'}.`);
}
