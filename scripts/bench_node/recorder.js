// The comparison recorder for scripts/bench: mod_audio_stream -> one WAV per call, the way the common
// tutorial does it with the `ws` package. A WebSocketServer accepts /calls/<uuid> (Bearer token checked in
// verifyClient), every binary message is appended to that call's file with fs.createWriteStream, and when the
// connection closes the stream is ended and the real WAV header is written over the 44-byte placeholder.
// No timeline, no sidecar, no crash safety: the same bytes-to-disk work as the Python recorder, nothing more.
//
//   node recorder.js --dir DIR --token TOKEN --rate 8000 --channels 1 [--host 127.0.0.1] [--port 0]
//
// Prints {"port": P, "pid": PID} once listening; on SIGTERM closes every connection (1001), finalises every
// file and prints {"closed": N, "open_at_stop": M} before exiting.
'use strict';

const fs = require('fs');
const path = require('path');
const { WebSocketServer } = require('ws');

const args = {};
for (let i = 2; i < process.argv.length; i += 2) args[process.argv[i].replace(/^--/, '')] = process.argv[i + 1];
const dir = args.dir;
const token = args.token;
const rate = parseInt(args.rate || '8000', 10);
const channels = parseInt(args.channels || '1', 10);
const CALL_PATH = /^\/calls\/([0-9a-fA-F-]{36})$/;

function wavHeader(dataBytes) {
  const h = Buffer.alloc(44);
  h.write('RIFF', 0); h.writeUInt32LE(36 + dataBytes, 4); h.write('WAVE', 8);
  h.write('fmt ', 12); h.writeUInt32LE(16, 16); h.writeUInt16LE(1, 20); h.writeUInt16LE(channels, 22);
  h.writeUInt32LE(rate, 24); h.writeUInt32LE(rate * channels * 2, 28); h.writeUInt16LE(channels * 2, 32);
  h.writeUInt16LE(16, 34); h.write('data', 36); h.writeUInt32LE(dataBytes, 40);
  return h;
}

let closed = 0;
const open = new Set();

const wss = new WebSocketServer({
  host: args.host || '127.0.0.1',
  port: parseInt(args.port || '0', 10),
  // ws's default, written out: the tutorial's server leaves it off, and mod_audio_stream only offers
  // permessage-deflate when STREAM_MESSAGE_DEFLATE asks for it (the controller sets it false by default).
  perMessageDeflate: false,
  verifyClient: (info) => CALL_PATH.test(info.req.url) && info.req.headers.authorization === `Bearer ${token}`,
});

wss.on('connection', (ws, req) => {
  const uuid = CALL_PATH.exec(req.url)[1].toLowerCase();
  const file = path.join(dir, `${uuid}.wav`);
  const out = fs.createWriteStream(file);
  out.write(wavHeader(0xffffffff - 36)); // a placeholder until the length is known
  let bytes = 0;
  const call = { ws, done: null };
  open.add(call);
  call.done = new Promise((resolve) => {
    ws.on('message', (data, isBinary) => {
      if (!isBinary) return; // metadata text frames
      bytes += data.length;
      out.write(data);
    });
    ws.on('close', () => {
      out.end(() => {
        const fd = fs.openSync(file, 'r+');
        fs.writeSync(fd, wavHeader(bytes), 0, 44, 0);
        fs.closeSync(fd);
        closed += 1;
        open.delete(call);
        resolve();
      });
    });
  });
});

wss.on('listening', () => {
  process.stdout.write(JSON.stringify({ port: wss.address().port, pid: process.pid }) + '\n');
});

process.on('SIGTERM', async () => {
  const left = [...open];
  for (const call of left) call.ws.close(1001, 'recorder stopping');
  await Promise.all(left.map((call) => call.done));
  wss.close();
  process.stdout.write(JSON.stringify({ closed, open_at_stop: left.length }) + '\n', () => process.exit(0));
});
