// The edgeship web app's service worker: the app works offline after the first visit.
// `deploy web` fills in VERSION (a hash of the site) and PRECACHE (every file but the WASM
// builds; the page asks for the build it loaded to be cached, see app.js registerOffline).
const VERSION = "{{VERSION}}";
const PRECACHE = ["{{PRECACHE}}"];
const PREFIX = "edgeship-web-";
const CACHE = PREFIX + VERSION;

self.addEventListener("install", (event) => {
  event.waitUntil(
    caches.open(CACHE).then((cache) => cache.addAll(PRECACHE)).then(() => self.skipWaiting()),
  );
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    caches.keys()
      .then((keys) => Promise.all(
        keys.filter((k) => k.startsWith(PREFIX) && k !== CACHE).map((k) => caches.delete(k))))
      .then(() => self.clients.claim()),
  );
});

// Cache first, for this app's own files only; anything else goes to the network untouched.
self.addEventListener("fetch", (event) => {
  const request = event.request;
  const url = new URL(request.url);
  const scope = new URL(self.registration.scope);
  if (request.method !== "GET" || url.origin !== scope.origin ||
      !url.pathname.startsWith(scope.pathname)) {
    return;
  }
  event.respondWith((async () => {
    const cache = await caches.open(CACHE);
    const hit = await cache.match(request, { ignoreSearch: true });
    if (hit) return hit;
    const response = await fetch(request);
    if (response.ok && response.type === "basic") cache.put(request, response.clone());
    return response;
  })());
});

self.addEventListener("message", (event) => {
  const port = event.ports[0];
  if (!event.data || !Array.isArray(event.data.cache)) return;
  event.waitUntil(
    caches.open(CACHE)
      .then(async (cache) => {
        for (const file of event.data.cache) {
          if (!(await cache.match(file))) await cache.add(file);
        }
      })
      .then(() => port && port.postMessage({ ok: true }),
        (err) => port && port.postMessage({ ok: false, error: String(err) })),
  );
});
