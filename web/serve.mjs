// A dependency-free static server for the demo: serves the repository root (so that the page at
// /web/ can fetch bundles under /exports/) on 127.0.0.1, with the COOP/COEP headers that let
// onnxruntime-web use threads. Any static server works too (then ORT runs single-threaded):
//   python3 -m http.server -b 127.0.0.1 -d . 8080
// Usage: node web/serve.mjs [--port 8080] [--root <dir>]
import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json; charset=utf-8',
  '.wasm': 'application/wasm',
  '.onnx': 'application/octet-stream',
  '.png': 'image/png',
  '.svg': 'image/svg+xml',
  '.map': 'application/json',
};

export function startServer({ root, port = 8080, host = '127.0.0.1', quiet = false } = {}) {
  root = path.resolve(root ?? path.join(path.dirname(fileURLToPath(import.meta.url)), '..'));
  const server = http.createServer((req, res) => {
    const url = new URL(req.url, 'http://localhost');
    let rel = decodeURIComponent(url.pathname);
    if (rel === '/') {
      res.writeHead(302, { Location: '/web/' });
      return res.end();
    }
    const file = path.join(root, path.normalize(rel));
    if (!file.startsWith(root)) {
      res.writeHead(403);
      return res.end('forbidden');
    }
    let target = file;
    try {
      if (fs.statSync(target).isDirectory()) target = path.join(target, 'index.html');
      const st = fs.statSync(target);
      // COOP + COEP make the page cross-origin isolated (SharedArrayBuffer, so ORT's threads).
      // no-cache + ETag: the browser revalidates every file (a bundle re-exported in place is
      // seen at once) and an unchanged one comes back as a 304 from its cache, which also lets
      // Chromium reuse its compiled code for the wasm files on the next visit.
      const etag = `"${st.size.toString(16)}-${Math.floor(st.mtimeMs).toString(16)}"`;
      const headers = {
        'Cross-Origin-Opener-Policy': 'same-origin',
        'Cross-Origin-Embedder-Policy': 'require-corp',
        'Cache-Control': 'no-cache',
        ETag: etag,
      };
      if (req.headers['if-none-match'] === etag) {
        res.writeHead(304, headers);
        return res.end();
      }
      res.writeHead(200, {
        ...headers,
        'Content-Type': TYPES[path.extname(target)] ?? 'application/octet-stream',
        'Content-Length': st.size,
      });
      if (req.method === 'HEAD') return res.end();
      fs.createReadStream(target).pipe(res);
    } catch {
      res.writeHead(404, { 'Content-Type': 'text/plain' });
      res.end(`not found: ${rel}`);
    }
    if (!quiet) console.log(`${req.method} ${rel}`);
  });
  return new Promise((resolve) => {
    server.listen(port, host, () => resolve(server));
  });
}

if (process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) {
  const args = process.argv.slice(2);
  const get = (k, d) => (args.includes(k) ? args[args.indexOf(k) + 1] : d);
  const server = await startServer({ port: Number(get('--port', 8080)), root: get('--root') });
  const { port } = server.address();
  console.log(`serving ${path.resolve(get('--root') ?? '.')} on http://127.0.0.1:${port}/web/`);
}
