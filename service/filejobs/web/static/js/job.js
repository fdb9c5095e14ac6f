// What the page knows about a job body: its statuses, name, API path and whether it is an image.

export const ACTIVE = new Set(['queued', 'running']);
export const RETRYABLE = new Set(['failed', 'cancelled']);
const IMAGE_FORMATS = new Set(['webp', 'png', 'jpeg', 'jpg', 'gif', 'bmp', 'tiff', 'avif']);

export function jobName(job) {
  return (job && job.file && job.file.name) || (job && job.id) || 'job';
}

export function jobPath(id, suffix = '') {
  return `/v1/jobs/${encodeURIComponent(id)}${suffix}`;
}

export function isImageJob(job) {
  if (!job || job.status !== 'succeeded') return false;
  const thumb = job.result && typeof job.result === 'object' ? job.result.thumbnail : null;
  const format = thumb && typeof thumb === 'object' ? String(thumb.format || '').toLowerCase() : '';
  return job.processor === 'thumbnail' || IMAGE_FORMATS.has(format);
}
