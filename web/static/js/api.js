// REST helpers: JSON in and out, errors as ApiError with the server's machine code.
export class ApiError extends Error {
  constructor(status, body) {
    super((body && body.error) || `HTTP ${status}`);
    this.status = status;
    this.code = (body && body.code) || "http_error";
    this.body = body;
  }
}

// A 429 is retried after the server's Retry-After, a few times and only for short waits.
const RETRIES = 3;
const MAX_WAIT_S = 30;
const sleep = (s) => new Promise((ok) => setTimeout(ok, s * 1000));
export function retryAfter(status, header, attempt) {
  const wait = Number(header);
  if (status !== 429 || attempt >= RETRIES || !(wait >= 0) || wait > MAX_WAIT_S) return null;
  return Math.max(wait, 0.2);
}

export async function api(method, url, body) {
  const opts = { method, credentials: "same-origin", headers: {} };
  if (body !== undefined) {
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  let resp = await fetch(url, opts);
  for (let attempt = 0, wait; (wait = retryAfter(resp.status, resp.headers.get("Retry-After"), attempt)) !== null; attempt++) {
    await sleep(wait);
    resp = await fetch(url, opts);
  }
  let data = null;
  const text = await resp.text();
  if (text) {
    try { data = JSON.parse(text); } catch (e) { data = { error: text.slice(0, 200) }; }
  }
  if (resp.status === 401 && !url.startsWith("/api/login")) {
    window.dispatchEvent(new CustomEvent("xj:unauthorized"));
  }
  if (!resp.ok) throw new ApiError(resp.status, data);
  return data || {};
}

export const get = (url) => api("GET", url);
export const post = (url, body) => api("POST", url, body === undefined ? {} : body);
export const put = (url, body) => api("PUT", url, body);
export const del = (url) => api("DELETE", url);

// Multipart upload with progress (fetch cannot report upload progress); a 429 is retried like in api().
export async function upload(url, fields, onProgress) {
  for (let attempt = 0; ; attempt++) {
    try {
      return await uploadOnce(url, fields, onProgress);
    } catch (e) {
      const wait = retryAfter(e.status, e.retryAfter, attempt);
      if (wait === null) throw e;
      await sleep(wait);
    }
  }
}

function uploadOnce(url, fields, onProgress) {
  return new Promise((resolve, reject) => {
    const form = new FormData();
    for (const [k, v] of Object.entries(fields)) form.append(k, v);
    const xhr = new XMLHttpRequest();
    xhr.open("POST", url);
    xhr.withCredentials = true;
    xhr.upload.onprogress = (e) => { if (e.lengthComputable && onProgress) onProgress(e.loaded / e.total); };
    xhr.onload = () => {
      let data = {};
      try { data = JSON.parse(xhr.responseText || "{}"); } catch (e) { data = { error: xhr.responseText }; }
      if (xhr.status >= 200 && xhr.status < 300) resolve(data);
      else reject(Object.assign(new ApiError(xhr.status, data), { retryAfter: xhr.getResponseHeader("Retry-After") }));
    };
    xhr.onerror = () => reject(new ApiError(0, { error: "network error", code: "network_error" }));
    xhr.send(form);
  });
}

export const qs = (params) => {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== "") p.set(k, v);
  return p.toString();
};
