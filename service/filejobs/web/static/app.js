// filejobs dashboard: plain ES modules (js/), no build step; one vendored library (tus-js-client,
// for resumable uploads of big files, loaded by js/resumable.js when first needed).
//
// Everything shown comes from the /v1 API. Data from the server (file names are user input) only
// ever reaches the page through textContent and attributes, never through innerHTML.
//
// The modules import each other's functions (some in a cycle: a 401 anywhere asks for the key,
// which stops the stream and clears the list); at load time they only define things, and this
// entry point wires the page up once all are loaded.

import { setupDetails } from './js/details.js';
import { forgetKey, showForgetKey, submitKey } from './js/key.js';
import { changeFilter, loadMore, reloadList } from './js/list.js';
import { renderParams } from './js/params-form.js';
import { start } from './js/session.js';
import { state, ui } from './js/state.js';
import { offerResumes } from './js/resumable.js';
import { setupDropzone, showSelectedFiles, submitUpload } from './js/upload.js';

function init() {
  ui.keyForm.addEventListener('submit', submitKey);
  ui.forgetKey.addEventListener('click', forgetKey);
  ui.uploadForm.addEventListener('submit', submitUpload);
  ui.fileInput.addEventListener('change', showSelectedFiles);
  ui.processor.addEventListener('change', renderParams);
  ui.statusFilter.addEventListener('change', changeFilter);
  ui.refresh.addEventListener('click', () => reloadList());
  ui.loadMore.addEventListener('click', loadMore);
  state.filter = ui.statusFilter.value; // a browser may restore the select on back/forward
  setupDropzone();
  setupDetails();
  showForgetKey();
  showSelectedFiles();
  start();
  offerResumes();
  document.documentElement.dataset.ready = 'true';
}

init();
