// Numbers and dates as the page shows them.

import { h } from './dom.js';

export function formatBytes(bytes) {
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

export function timeElement(value, format = dateTimeFormat) {
  const date = parseDate(value);
  if (!date) return document.createTextNode('\u2014');
  return h('time', { datetime: date.toISOString(), title: date.toISOString() }, format.format(date));
}

export function rowTime(value) {
  const date = parseDate(value);
  if (!date) return null;
  const today = new Date();
  const sameDay = date.toDateString() === today.toDateString();
  return timeElement(value, sameDay ? timeFormat : shortDateFormat);
}

export function percent(progress) {
  const value = typeof progress === 'number' && Number.isFinite(progress) ? progress : 0;
  return Math.round(Math.min(1, Math.max(0, value)) * 100);
}

export function clampProgress(progress) {
  return percent(progress) / 100;
}
