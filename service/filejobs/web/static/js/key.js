// The API key: asked for on a 401, checked, kept in sessionStorage, forgotten.

import { announce } from './announce.js';
import { responseDetail } from './api.js';
import { setConnection } from './connection.js';
import { h } from './dom.js';
import { clearJobs } from './list.js';
import { renderParams } from './params-form.js';
import { start, stream } from './session.js';
import { state, storeKey, ui } from './state.js';

export function showForgetKey() {
  ui.forgetKey.hidden = !state.key;
}

/** A request answered 401: ask for a key (unless a newer key than the one it used is in place). */
export function requireKey(detail, keyUsed = state.key) {
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

export async function submitKey(event) {
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

export function forgetKey() {
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
