// Thumbnails: fetched with the auth header, shown from object URLs, shared and released.

import { api } from './api.js';
import { isImageJob, jobName, jobPath } from './job.js';
import { state } from './state.js';

const thumbs = new Map();

export function acquireThumb(id) {
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

export function releaseThumb(id) {
  const entry = thumbs.get(id);
  if (!entry) return;
  entry.refs -= 1;
  if (entry.refs <= 0) {
    thumbs.delete(id);
    if (entry.url) URL.revokeObjectURL(entry.url);
  }
}

export const thumbObserver =
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

export function wantRowThumb(row) {
  if (row.thumbHeld || row.thumbWanted || !isImageJob(row.job)) return;
  row.thumbWanted = true;
  row.thumbImg.alt = `Thumbnail of ${jobName(row.job)}`;
  row.thumbSlot.hidden = false; // the place is kept while the image loads
  row.li.classList.add('has-thumb');
  if (thumbObserver) thumbObserver.observe(row.li);
  else loadRowThumb(row);
}
