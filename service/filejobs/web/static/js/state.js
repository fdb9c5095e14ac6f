// The page's elements and its state (the key, the jobs known, the rows shown), shared by every module.

import { $ } from './dom.js';

const KEY_STORAGE = 'filejobs.apiKey';

export const ui = {
  connection: $('connection'),
  connectionText: $('connection-text'),
  forgetKey: $('forget-key'),
  keySection: $('key-section'),
  keyHeading: $('key-heading'),
  keyForm: $('key-form'),
  keyInput: $('api-key'),
  keyError: $('key-error'),
  uploadForm: $('upload-form'),
  dropzone: $('dropzone'),
  fileInput: $('file-input'),
  selectedFiles: $('selected-files'),
  processor: $('processor'),
  processorDescription: $('processor-description'),
  params: $('params'),
  paramsFields: $('params-fields'),
  uploadError: $('upload-error'),
  uploadsHeading: $('uploads-heading'),
  uploads: $('uploads'),
  resumable: $('resumable'),
  resumableList: $('resumable-list'),
  jobsHeading: $('jobs-heading'),
  statusFilter: $('status-filter'),
  refresh: $('refresh'),
  jobsState: $('jobs-state'),
  jobs: $('jobs'),
  loadMore: $('load-more'),
  announcer: $('announcer'),
  dialog: $('details'),
};

export const state = {
  key: readKey(),
  needKey: false,
  filter: '',
  /** id -> the newest job body seen (from a page, an event or an action's answer). */
  known: new Map(),
  /** id -> {job, li, ...} for the rows on the page. */
  rows: new Map(),
  /** ids deleted (by us or an event): a list page fetched before the deletion must not bring them back. */
  deleted: new Set(),
  nextCursor: null,
  listLoaded: false,
  listController: null,
  /** While a reload is in flight: the ids events touched, kept even if the page lacks them. */
  reloadTouched: null,
  processors: [],
  fields: [],
};

function readKey() {
  try {
    return sessionStorage.getItem(KEY_STORAGE) || '';
  } catch {
    return '';
  }
}

export function storeKey(value) {
  try {
    if (value) sessionStorage.setItem(KEY_STORAGE, value);
    else sessionStorage.removeItem(KEY_STORAGE);
  } catch {
    // storage unavailable (private mode): the key lives in memory for this page only
  }
}
