// filejobs dashboard: plain ES module, no build step, no dependencies.
//
// Everything shown comes from the /v1 API. Data from the server (file names are user input) only
// ever reaches the page through textContent and attributes, never through innerHTML.

import { SseParser } from './sse.js';

const KEY_STORAGE = 'filejobs.apiKey';
const PROCESSOR_STORAGE = 'filejobs.processor';
const PAGE_SIZE = 50;
const PARALLEL_UPLOADS = 3;
const DONE_UPLOAD_LINGER_MS = 6000;
const STREAM_RETRY_DEFAULT_MS = 2000;
const STREAM_RETRY_MAX_MS = 30000;
// With a keep-alive comment every ~15 s, this much silence means the connection is dead.
const STREAM_SILENCE_MS = 45000;
const LIST_FALLBACK_MS = 3000;
const KNOWN_LIMIT = 5000;
const ACTIVE = new Set(['queued', 'running']);
const RETRYABLE = new Set(['failed', 'cancelled']);
const IMAGE_FORMATS = new Set(['webp', 'png', 'jpeg', 'jpg', 'gif', 'bmp', 'tiff', 'avif']);

const $ = (id) => document.getElementById(id);

const ui = {
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
  jobsHeading: $('jobs-heading'),
  statusFilter: $('status-filter'),
  refresh: $('refresh'),
  jobsState: $('jobs-state'),
  jobs: $('jobs'),
  loadMore: $('load-more'),
  announcer: $('announcer'),
  dialog: $('details'),
};

const state = {
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

// ---- small helpers ---------------------------------------------------------------------------

function readKey() {
  try {
    return sessionStorage.getItem(KEY_STORAGE) || '';
  } catch {
    return '';
  }
}

function storeKey(value) {
  try {
    if (value) sessionStorage.setItem(KEY_STORAGE, value);
    else sessionStorage.removeItem(KEY_STORAGE);
  } catch {
    // storage unavailable (private mode): the key lives in memory for this page only
  }
}

/** Build an element; strings in `children` become text nodes (never parsed as HTML). */
function h(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === 'class') node.className = value;
    else if (name === 'text') node.textContent = value;
    else if (name === 'dataset') Object.assign(node.dataset, value);
    else if (name.startsWith('on') && typeof value === 'function')
      node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? '' : String(value));
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined && child !== false) node.append(child);
  }
  return node;
}

/**
 * Server text with Markdown's inline code (`size`) and emphasis (*never*) as DOM nodes: <code> and
 * <em> around text nodes, nothing else (the text is never parsed as HTML).
 */
function inlineMarkdown(text) {
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

function formatBytes(bytes) {
  if (typeof bytes !== 'number' || !Number.isFinite(bytes)) return '';
  if (bytes < 1024) return `${bytes} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value < 10 ? value.toFixed(1) : Math.round(value)} ${units[unit]}`;
}

const dateTimeFormat = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'medium' });
const timeFormat = new Intl.DateTimeFormat(undefined, { timeStyle: 'short' });
const shortDateFormat = new Intl.DateTimeFormat(undefined, { dateStyle: 'short', timeStyle: 'short' });

function parseDate(value) {
  if (!value) return null;
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? null : date;
}

function timeElement(value, format = dateTimeFormat) {
  const date = parseDate(value);
  if (!date) return document.createTextNode('\u2014');
  return h('time', { datetime: date.toISOString(), title: date.toISOString() }, format.format(date));
}

function rowTime(value) {
  const date = parseDate(value);
  if (!date) return null;
  const today = new Date();
  const sameDay = date.toDateString() === today.toDateString();
  return timeElement(value, sameDay ? timeFormat : shortDateFormat);
}

function percent(progress) {
  const value = typeof progress === 'number' && Number.isFinite(progress) ? progress : 0;
  return Math.round(Math.min(1, Math.max(0, value)) * 100);
}

function clampProgress(progress) {
  return percent(progress) / 100;
}

function jobName(job) {
  return (job && job.file && job.file.name) || (job && job.id) || 'job';
}

function jobPath(id, suffix = '') {
  return `/v1/jobs/${encodeURIComponent(id)}${suffix}`;
}

function isImageJob(job) {
  if (!job || job.status !== 'succeeded') return false;
  const thumb = job.result && typeof job.result === 'object' ? job.result.thumbnail : null;
  const format = thumb && typeof thumb === 'object' ? String(thumb.format || '').toLowerCase() : '';
  return job.processor === 'thumbnail' || IMAGE_FORMATS.has(format);
}

// ---- announcements (aria-live) ---------------------------------------------------------------

let pendingAnnouncements = [];
let announceTimer = 0;

function announce(text) {
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

// ---- the API ---------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, detail) {
    super(detail);
    this.name = 'ApiError';
    this.status = status;
    this.detail = detail;
  }
}

/** The human part of an error answer: problem+json's detail (and its field errors), or the text. */
function problemDetail(status, text, contentType = '') {
  let detail = '';
  if (text && (contentType.includes('json') || /^\s*\{/.test(text))) {
    try {
      const body = JSON.parse(text);
      detail = String(body.detail || body.title || '');
      if (Array.isArray(body.errors) && body.errors.length) {
        const parts = body.errors.slice(0, 5).map((error) => {
          const loc = Array.isArray(error.loc) ? error.loc.join('.') : '';
          return loc ? `${loc}: ${error.msg}` : String(error.msg || '');
        });
        detail = `${detail} ${parts.join('; ')}`.trim();
      }
    } catch {
      detail = '';
    }
  }
  if (!detail && text && !contentType.includes('html')) detail = text.slice(0, 300);
  return detail || `The server answered ${status}.`;
}

async function responseDetail(response) {
  let text = '';
  try {
    text = await response.text();
  } catch {
    text = '';
  }
  return problemDetail(response.status, text, response.headers.get('content-type') || '');
}

function authHeaders(init) {
  const headers = new Headers(init);
  if (state.key) headers.set('Authorization', `Bearer ${state.key}`);
  return headers;
}

async function api(path, { method = 'GET', body, accept = 'application/json', signal } = {}) {
  const keyUsed = state.key;
  const headers = authHeaders();
  if (accept) headers.set('Accept', accept);
  const response = await fetch(path, {
    method,
    body,
    headers,
    signal,
    cache: 'no-store',
    credentials: 'same-origin',
  });
  if (response.status === 401) {
    const detail = await responseDetail(response);
    requireKey(detail, keyUsed);
    throw new ApiError(401, detail);
  }
  if (!response.ok) throw new ApiError(response.status, await responseDetail(response));
  return response;
}

async function apiJson(path, options) {
  const response = await api(path, options);
  return response.json();
}

function isAbort(error) {
  return error && error.name === 'AbortError';
}

function errorText(error) {
  if (error instanceof ApiError) return error.detail;
  if (error instanceof TypeError) return 'The server cannot be reached.';
  return (error && error.message) || String(error);
}

// ---- API key ---------------------------------------------------------------------------------

function showForgetKey() {
  ui.forgetKey.hidden = !state.key;
}

/** A request answered 401: ask for a key (unless a newer key than the one it used is in place). */
function requireKey(detail, keyUsed = state.key) {
  if (keyUsed !== state.key || state.needKey) return;
  const hadKey = Boolean(state.key);
  state.needKey = true;
  state.key = '';
  storeKey('');
  showForgetKey();
  stream.stop();
  setConnection('auth');
  clearJobs();
  state.processors = [];
  ui.processor.replaceChildren(h('option', { value: '' }, 'Enter an API key first'));
  renderParams();
  ui.jobsState.textContent = 'Enter an API key to see your jobs.';
  ui.jobsState.hidden = false;
  ui.keyError.textContent = hadKey ? `The key was not accepted: ${detail}` : '';
  ui.keySection.hidden = false;
  ui.keyInput.focus();
  announce(hadKey ? 'The API key was not accepted. Enter another one.' : 'This service needs an API key.');
}

async function submitKey(event) {
  event.preventDefault();
  const value = ui.keyInput.value.trim();
  ui.keyError.textContent = '';
  if (!value) {
    ui.keyError.textContent = 'Enter the API key.';
    ui.keyInput.focus();
    return;
  }
  let response;
  try {
    response = await fetch('/v1/processors', {
      headers: { Authorization: `Bearer ${value}`, Accept: 'application/json' },
      cache: 'no-store',
    });
  } catch {
    ui.keyError.textContent = 'The server cannot be reached; try again.';
    return;
  }
  if (!response.ok) {
    ui.keyError.textContent =
      response.status === 401
        ? `That key was not accepted: ${await responseDetail(response)}`
        : await responseDetail(response);
    ui.keyInput.select();
    return;
  }
  state.key = value;
  storeKey(value);
  ui.keyInput.value = '';
  ui.keySection.hidden = true;
  showForgetKey();
  announce('API key accepted.');
  start();
  ui.jobsHeading.focus();
}

function forgetKey() {
  state.key = '';
  storeKey('');
  stream.stop();
  clearJobs();
  showForgetKey();
  announce('The API key is forgotten.');
  start();
  if (!ui.keySection.hidden) ui.keyInput.focus();
  else ui.jobsHeading.focus();
}

// ---- connection state ------------------------------------------------------------------------

const CONNECTION_TEXT = {
  connecting: 'Connecting\u2026',
  live: 'Live',
  reconnecting: 'Reconnecting\u2026',
  auth: 'API key needed',
  stopped: 'Not connected',
};

function setConnection(name) {
  const previous = ui.connection.dataset.state;
  if (previous === name) return;
  ui.connection.dataset.state = name;
  ui.connectionText.textContent = CONNECTION_TEXT[name] || name;
  if (name === 'reconnecting' && previous === 'live') announce('Live updates lost; reconnecting.');
  if (name === 'live' && previous === 'reconnecting') announce('Live updates are back.');
}

// ---- Server-Sent Events over fetch() (EventSource cannot send Authorization) ------------------

class EventStream {
  constructor(url, handlers) {
    this.url = url;
    this.handlers = handlers;
    this.lastEventId = '';
    this.retryMs = STREAM_RETRY_DEFAULT_MS;
    this.failures = 0;
    this.running = false;
    this.controller = null;
    this.generation = 0;
    this.wake = null;
    this.retryAfterMs = 0;
  }

  start() {
    this.stop();
    this.running = true;
    this.generation += 1;
    this.loop(this.generation);
  }

  stop() {
    this.running = false;
    this.generation += 1;
    if (this.controller) this.controller.abort();
    this.controller = null;
    if (this.wake) this.wake();
  }

  /** Forget the position (another key, another set of jobs). */
  reset() {
    this.lastEventId = '';
    this.failures = 0;
  }

  alive(generation) {
    return this.running && generation === this.generation;
  }

  async loop(generation) {
    while (this.alive(generation)) {
      const controller = new AbortController();
      this.controller = controller;
      this.retryAfterMs = 0;
      let opened = false;
      try {
        const headers = authHeaders({ Accept: 'text/event-stream' });
        const resumeFrom = this.lastEventId;
        if (resumeFrom) headers.set('Last-Event-ID', resumeFrom);
        const keyUsed = state.key;
        const response = await fetch(this.url, { headers, signal: controller.signal, cache: 'no-store' });
        if (!this.alive(generation)) return;
        if (response.status === 401) {
          requireKey(await responseDetail(response), keyUsed);
          return;
        }
        if (response.status === 400 && resumeFrom) this.lastEventId = ''; // an id it cannot resume from
        const retryAfter = Number(response.headers.get('retry-after'));
        this.retryAfterMs = Number.isFinite(retryAfter) && retryAfter > 0 ? retryAfter * 1000 : 0;
        const type = response.headers.get('content-type') || '';
        if (!response.ok || !response.body || !type.startsWith('text/event-stream')) {
          throw new Error(`event stream answered ${response.status}`);
        }
        opened = true;
        this.failures = 0;
        this.handlers.onOpen?.(Boolean(resumeFrom));
        await this.read(response.body, controller, generation);
      } catch (error) {
        if (!this.alive(generation)) return;
        if (!isAbort(error)) console.debug('event stream:', error);
      }
      if (!this.alive(generation)) return;
      if (!opened) this.failures += 1;
      this.handlers.onDown?.(opened);
      await this.pause(this.delay(), generation);
    }
  }

  delay() {
    const base = Math.max(250, this.retryMs);
    // the server's retry for the first attempts, doubling after each further failure
    const backoff = Math.min(STREAM_RETRY_MAX_MS, base * 2 ** Math.max(0, Math.min(this.failures, 8) - 1));
    const jittered = Math.round(backoff * (0.75 + Math.random() * 0.5));
    return Math.max(jittered, Math.min(this.retryAfterMs, STREAM_RETRY_MAX_MS * 4)); // 503/429 Retry-After
  }

  pause(ms, generation) {
    return new Promise((resolve) => {
      const wake = () => {
        window.clearTimeout(timer);
        if (this.wake === wake) this.wake = null;
        resolve();
      };
      const timer = window.setTimeout(wake, ms);
      this.wake = wake;
      if (!this.alive(generation)) wake();
    });
  }

  async read(body, controller, generation) {
    const reader = body.getReader();
    const decoder = new TextDecoder('utf-8');
    let watchdog = 0;
    const arm = () => {
      window.clearTimeout(watchdog);
      watchdog = window.setTimeout(() => controller.abort(), STREAM_SILENCE_MS);
    };
    const parser = new SseParser({
      onEvent: (event) => {
        if (event.id) this.lastEventId = event.id;
        this.handlers.onEvent?.(event);
      },
      onRetry: (ms) => {
        this.retryMs = ms;
      },
      onComment: () => {},
    });
    arm();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done || !this.alive(generation)) break;
        arm();
        parser.push(decoder.decode(value, { stream: true }));
      }
      parser.push(decoder.decode());
    } finally {
      window.clearTimeout(watchdog);
      reader.releaseLock?.();
    }
  }
}

let listFallbackTimer = 0;

const stream = new EventStream('/v1/events', {
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

// ---- processors and the params form ----------------------------------------------------------

function lookupRef(root, ref) {
  if (typeof ref !== 'string' || !ref.startsWith('#/')) return {};
  let node = root;
  for (const raw of ref.slice(2).split('/')) {
    const part = raw.replace(/~1/g, '/').replace(/~0/g, '~');
    node = node && typeof node === 'object' ? node[part] : undefined;
  }
  return node && typeof node === 'object' ? node : {};
}

/** Follow $ref and single-member allOf; sibling keywords (default, description) win. */
function resolveSchema(schema, root, depth = 0) {
  if (!schema || typeof schema !== 'object' || depth > 20) return {};
  if (schema.$ref) {
    const { $ref, ...rest } = schema;
    return { ...resolveSchema(lookupRef(root, $ref), root, depth + 1), ...rest };
  }
  if (Array.isArray(schema.allOf) && schema.allOf.length === 1) {
    const { allOf, ...rest } = schema;
    return { ...resolveSchema(allOf[0], root, depth + 1), ...rest };
  }
  return schema;
}

function describeField(name, raw, root, required) {
  const outer = resolveSchema(raw, root);
  let schema = outer;
  let nullable = false;
  const union = outer.anyOf || outer.oneOf;
  if (Array.isArray(union)) {
    const options = union.map((option) => resolveSchema(option, root));
    const concrete = options.filter((option) => option.type !== 'null');
    nullable = concrete.length < options.length;
    const { anyOf, oneOf, ...rest } = outer;
    schema = concrete.length === 1 ? { ...concrete[0], ...rest } : { ...rest, type: undefined };
  }
  if (Array.isArray(schema.type)) {
    const types = schema.type.filter((type) => type !== 'null');
    nullable = nullable || types.length < schema.type.length;
    schema = { ...schema, type: types.length === 1 ? types[0] : undefined };
  }
  let choices = null;
  if (Array.isArray(schema.enum)) choices = schema.enum;
  else if ('const' in schema) choices = [schema.const];
  if (choices && choices.includes(null)) {
    nullable = true;
    choices = choices.filter((choice) => choice !== null);
  }
  let kind = 'json';
  if (choices) kind = 'enum';
  else if (schema.type === 'boolean') kind = nullable ? 'tristate' : 'boolean';
  else if (schema.type === 'integer') kind = 'integer';
  else if (schema.type === 'number') kind = 'number';
  else if (schema.type === 'string') kind = 'string';
  const hasDefault = 'default' in schema;
  return {
    name,
    kind,
    schema,
    choices,
    nullable,
    required,
    hasDefault,
    default: schema.default,
    title: schema.title || name,
    description: typeof schema.description === 'string' ? schema.description : '',
  };
}

function fieldHint(field) {
  const parts = [];
  if (field.description) parts.push(field.description);
  const { schema } = field;
  const min = schema.minimum ?? schema.exclusiveMinimum;
  const max = schema.maximum ?? schema.exclusiveMaximum;
  if ((field.kind === 'integer' || field.kind === 'number') && (min !== undefined || max !== undefined)) {
    if (min !== undefined && max !== undefined) parts.push(`From ${min} to ${max}.`);
    else if (min !== undefined) parts.push(`At least ${min}.`);
    else parts.push(`At most ${max}.`);
  }
  if (field.kind === 'string' && schema.maxLength !== undefined) {
    const { minLength, maxLength } = schema;
    if (minLength && minLength === maxLength)
      parts.push(`Exactly ${maxLength} ${maxLength === 1 ? 'character' : 'characters'}.`);
    else if (minLength) parts.push(`${minLength} to ${maxLength} characters.`);
    else parts.push(`Up to ${maxLength} characters.`);
  }
  if (
    field.hasDefault &&
    field.default !== null &&
    field.kind !== 'boolean' &&
    schema.format !== 'password'
  ) {
    parts.push(
      `Default: ${typeof field.default === 'string' ? field.default : JSON.stringify(field.default)}.`,
    );
  } else if (field.nullable && !field.required) {
    parts.push('Optional.');
  }
  return parts.join(' ');
}

function safeId(name) {
  return `param-${String(name).replace(/[^A-Za-z0-9_-]/g, '_')}`;
}

function renderField(field) {
  const id = safeId(field.name);
  const hint = fieldHint(field);
  const hintId = `${id}-hint`;
  const labelText = field.required ? `${field.title} (required)` : field.title;
  const label = h('label', { for: id }, labelText);
  let input;
  const { schema } = field;

  if (field.kind === 'boolean') {
    input = h('input', { type: 'checkbox', id, name: field.name });
    input.checked = field.default === true;
  } else if (field.kind === 'tristate' || field.kind === 'enum') {
    input = h('select', { id, name: field.name });
    const options =
      field.kind === 'tristate'
        ? [
            ['', 'Default (automatic)'],
            ['true', 'Yes'],
            ['false', 'No'],
          ]
        : field.choices.map((choice, index) => [String(index), String(choice)]);
    if (field.kind === 'enum' && (!field.hasDefault || field.default === null) && !field.required) {
      options.unshift(['', 'Default']);
    }
    for (const [value, text] of options) input.append(h('option', { value }, text));
    if (field.kind === 'tristate') {
      input.value = field.default === true ? 'true' : field.default === false ? 'false' : '';
    } else if (field.hasDefault && field.default !== null) {
      const index = field.choices.findIndex((choice) => choice === field.default);
      if (index >= 0) input.value = String(index);
    }
  } else if (field.kind === 'integer' || field.kind === 'number') {
    input = h('input', {
      type: 'number',
      id,
      name: field.name,
      inputmode: field.kind === 'integer' ? 'numeric' : 'decimal',
    });
    input.step = schema.multipleOf ? String(schema.multipleOf) : field.kind === 'integer' ? '1' : 'any';
    const min =
      schema.minimum ??
      (schema.exclusiveMinimum !== undefined && field.kind === 'integer'
        ? schema.exclusiveMinimum + 1
        : schema.exclusiveMinimum);
    const max =
      schema.maximum ??
      (schema.exclusiveMaximum !== undefined && field.kind === 'integer'
        ? schema.exclusiveMaximum - 1
        : schema.exclusiveMaximum);
    if (min !== undefined) input.min = String(min);
    if (max !== undefined) input.max = String(max);
    if (field.hasDefault && typeof field.default === 'number') input.value = String(field.default);
  } else if (field.kind === 'string') {
    const secret = schema.format === 'password' || schema.writeOnly === true;
    input = h('input', {
      type: secret ? 'password' : 'text',
      id,
      name: field.name,
      autocomplete: secret ? 'new-password' : 'off',
      spellcheck: 'false',
    });
    if (schema.maxLength !== undefined) input.maxLength = schema.maxLength;
    if (schema.minLength !== undefined) input.minLength = schema.minLength;
    if (field.hasDefault && typeof field.default === 'string' && !secret) input.value = field.default;
  } else {
    input = h('textarea', { id, name: field.name, rows: '2', spellcheck: 'false', placeholder: 'JSON' });
    if (field.hasDefault && field.default !== null && field.default !== undefined)
      input.value = JSON.stringify(field.default);
  }
  input.dataset.testid = id;
  if (field.required) input.required = true;
  if (hint) input.setAttribute('aria-describedby', hintId);
  const wrap = h('div', {
    class: field.kind === 'boolean' ? 'field field-check' : 'field',
    'data-param': field.name,
  });
  if (field.kind === 'boolean') wrap.append(input, label);
  else wrap.append(label, input);
  if (hint) wrap.append(h('p', { class: 'hint', id: hintId }, inlineMarkdown(hint)));
  return { field, input, wrap };
}

function renderParams() {
  const processor = state.processors.find((item) => item.name === ui.processor.value);
  ui.paramsFields.replaceChildren();
  state.fields = [];
  if (!processor) {
    ui.processorDescription.textContent = '';
    ui.params.hidden = true;
    ui.fileInput.removeAttribute('accept');
    return;
  }
  const accepts = Array.isArray(processor.accepts) ? processor.accepts : [];
  ui.processorDescription.replaceChildren(
    ...inlineMarkdown(processor.description),
    accepts.length ? ` Accepts ${accepts.join(', ')}.` : '',
  );
  if (accepts.length) ui.fileInput.accept = accepts.join(',');
  else ui.fileInput.removeAttribute('accept');
  const schema =
    processor.params_schema && typeof processor.params_schema === 'object' ? processor.params_schema : {};
  const root = resolveSchema(schema, schema);
  const properties = root.properties && typeof root.properties === 'object' ? root.properties : {};
  const required = new Set(Array.isArray(root.required) ? root.required : []);
  for (const [name, raw] of Object.entries(properties)) {
    const rendered = renderField(describeField(name, raw, schema, required.has(name)));
    state.fields.push(rendered);
    ui.paramsFields.append(rendered.wrap);
  }
  if (!state.fields.length) {
    ui.paramsFields.append(h('p', { class: 'hint' }, 'This processor takes no parameters.'));
  }
  ui.params.hidden = false;
}

/** The params object from the form, or null after reporting what is wrong. */
function collectParams() {
  const params = {};
  for (const { field, input } of state.fields) {
    input.setCustomValidity('');
    const raw = input.type === 'checkbox' ? input.checked : input.value;
    switch (field.kind) {
      case 'boolean':
        params[field.name] = raw;
        break;
      case 'tristate':
        if (raw !== '') params[field.name] = raw === 'true';
        break;
      case 'enum':
        if (raw !== '') params[field.name] = field.choices[Number(raw)];
        break;
      case 'integer':
      case 'number':
        if (raw !== '') {
          const number = Number(raw);
          if (!Number.isFinite(number) || (field.kind === 'integer' && !Number.isInteger(number))) {
            input.setCustomValidity(field.kind === 'integer' ? 'Enter a whole number.' : 'Enter a number.');
          } else params[field.name] = number;
        }
        break;
      case 'string':
        if (raw !== '' || field.required) params[field.name] = raw;
        break;
      default:
        if (raw.trim() !== '') {
          try {
            params[field.name] = JSON.parse(raw);
          } catch {
            input.setCustomValidity('Enter valid JSON.');
          }
        }
    }
  }
  for (const { input } of state.fields) {
    if (!input.checkValidity()) {
      input.reportValidity();
      input.focus();
      return null;
    }
  }
  return params;
}

async function loadProcessors() {
  try {
    const body = await apiJson('/v1/processors');
    state.processors = Array.isArray(body.items) ? body.items : [];
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) return;
    ui.processorDescription.textContent = `Could not load the processors: ${errorText(error)}`;
    return;
  }
  let remembered = '';
  try {
    remembered = sessionStorage.getItem(PROCESSOR_STORAGE) || '';
  } catch {
    remembered = '';
  }
  const previous = ui.processor.value || remembered || 'inspect';
  ui.processor.replaceChildren(
    ...state.processors.map((item) => h('option', { value: item.name }, item.name)),
  );
  if (state.processors.some((item) => item.name === previous)) ui.processor.value = previous;
  renderParams();
}

// ---- choosing files and uploading ------------------------------------------------------------

function showSelectedFiles() {
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

function setupDropzone() {
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

function uploadOne({ file, processor, params, item }) {
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

function submitUpload(event) {
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

// ---- thumbnails (fetched with the auth header, shown from object URLs) -----------------------

const thumbs = new Map();

function acquireThumb(id) {
  let entry = thumbs.get(id);
  if (!entry) {
    entry = { refs: 0, url: null, promise: null };
    const own = entry;
    thumbs.set(id, own);
    own.promise = (async () => {
      try {
        const response = await api(jobPath(id, '/result'), { accept: 'image/*' });
        const type = response.headers.get('content-type') || '';
        if (!type.startsWith('image/')) return null;
        const blob = await response.blob();
        const url = URL.createObjectURL(blob);
        if (thumbs.get(id) !== own) {
          URL.revokeObjectURL(url); // every user went away while it loaded
          return null;
        }
        own.url = url;
        return url;
      } catch {
        if (thumbs.get(id) === own && own.refs <= 0) thumbs.delete(id);
        return null;
      }
    })();
  }
  entry.refs += 1;
  return entry.promise;
}

function releaseThumb(id) {
  const entry = thumbs.get(id);
  if (!entry) return;
  entry.refs -= 1;
  if (entry.refs <= 0) {
    thumbs.delete(id);
    if (entry.url) URL.revokeObjectURL(entry.url);
  }
}

const thumbObserver =
  'IntersectionObserver' in window
    ? new IntersectionObserver(
        (entries) => {
          for (const entry of entries) {
            if (!entry.isIntersecting) continue;
            thumbObserver.unobserve(entry.target);
            const row = state.rows.get(entry.target.dataset.jobId);
            if (row) loadRowThumb(row);
          }
        },
        { rootMargin: '200px' },
      )
    : null;

function loadRowThumb(row) {
  if (row.thumbHeld) return;
  row.thumbHeld = true;
  const id = row.job.id;
  acquireThumb(id).then((url) => {
    if (state.rows.get(id) !== row) return;
    if (!url) {
      row.thumbSlot.hidden = true;
      row.li.classList.remove('has-thumb');
      return;
    }
    row.thumbImg.src = url;
  });
}

function wantRowThumb(row) {
  if (row.thumbHeld || row.thumbWanted || !isImageJob(row.job)) return;
  row.thumbWanted = true;
  row.thumbImg.alt = `Thumbnail of ${jobName(row.job)}`;
  row.thumbSlot.hidden = false; // the place is kept while the image loads
  row.li.classList.add('has-thumb');
  if (thumbObserver) thumbObserver.observe(row.li);
  else loadRowThumb(row);
}

// ---- the job list ----------------------------------------------------------------------------

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

function clearJobs() {
  if (state.listController) state.listController.abort();
  state.listController = null;
  for (const id of [...state.rows.keys()]) removeRow(id);
  state.known.clear();
  state.nextCursor = null;
  state.listLoaded = false;
  state.reloadTouched = null;
  updateListState();
}

function updateListState() {
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
function applyJob(job, source) {
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

function jobDeleted(id, fromEvent) {
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

async function reloadList() {
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

async function loadMore() {
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

function changeFilter() {
  state.filter = ui.statusFilter.value;
  for (const id of [...state.rows.keys()]) removeRow(id);
  state.nextCursor = null;
  state.listLoaded = false;
  reloadList();
  announce(state.filter ? `Showing ${state.filter} jobs.` : 'Showing all jobs.');
}

// ---- details dialog --------------------------------------------------------------------------

const details = {
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

function renderDetails() {
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
    ['Created', timeElement(job.created_at), 'details-created'],
    ['Started', timeElement(job.started_at), 'details-started'],
    ['Finished', timeElement(job.finished_at), 'details-finished'],
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

function openDetails(id, opener) {
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

function setupDetails() {
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

// ---- start -----------------------------------------------------------------------------------

function start() {
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
  document.documentElement.dataset.ready = 'true';
}

init();
