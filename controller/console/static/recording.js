// One recording: the player (the WAV with HTTP Range), its waveform from the server's peaks, and the call's
// timeline under it: gaps shaded by cause, text frames as markers, the agent's turns as spans. Clicking any of
// them (or anywhere on the timeline) seeks the player there; the arrow keys on the timeline seek too.
import { api, bytes, clock, el, secs, session, setupHeader, when } from './common.js';

setupHeader();
const id = new URLSearchParams(location.search).get('id') || '';
const audio = document.getElementById('audio');
const timeline = document.getElementById('timeline');
const CAUSES = { stream_lost: 'stream lost', restart: 'controller restart', no_audio: 'no audio', tail: 'tail' };
let duration = 0;
let peaks = null;

function pct(seconds) { return (100 * Math.min(Math.max(seconds, 0), duration) / duration) + '%'; }

function seek(seconds) {
  audio.currentTime = Math.min(Math.max(seconds, 0), duration);
  updatePlayhead();
}

function span(cls, start, length, label) {
  return el('button', { type: 'button', class: cls, title: label, 'aria-label': label, 'data-start': String(start),
    'data-length': String(length), style: null,
    onclick: (event) => { event.stopPropagation(); seek(start); } });
}

function place(node, start, length) {
  node.style.left = pct(start);
  if (length !== null) node.style.width = `calc(${pct(start + length)} - ${pct(start)})`;
  return node;
}

function drawWaves() {
  if (!peaks) return;
  const style = getComputedStyle(document.documentElement);
  timeline.querySelectorAll('canvas[data-channel]').forEach((canvas) => {
    const channel = Number(canvas.dataset.channel);
    const data = peaks.peaks[channel] || [];
    const ratio = window.devicePixelRatio || 1;
    const width = Math.max(1, Math.round(canvas.clientWidth * ratio));
    const height = Math.max(1, Math.round(canvas.clientHeight * ratio));
    canvas.width = width; canvas.height = height;
    const g = canvas.getContext('2d');
    g.clearRect(0, 0, width, height);
    g.fillStyle = style.getPropertyValue(channel ? '--wave2' : '--wave').trim() || '#36c';
    const perBucket = peaks.frames_per_bucket / peaks.rate;  // seconds each peak spans
    for (let x = 0; x < width; x++) {
      const t0 = (x / width) * duration, t1 = ((x + 1) / width) * duration;
      const b0 = Math.floor(t0 / perBucket), b1 = Math.max(b0 + 1, Math.ceil(t1 / perBucket));
      let low = 0, high = 0;
      for (let b = b0; b < b1 && b < data.length; b++) { low = Math.min(low, data[b][0]); high = Math.max(high, data[b][1]); }
      const top = (1 - high) * height / 2, bottom = (1 - low) * height / 2;
      g.fillRect(x, top, 1, Math.max(1, bottom - top));
    }
  });
}

function updatePlayhead() {
  const head = timeline.querySelector('.playhead');
  if (head && duration) head.style.left = pct(audio.currentTime);
  document.getElementById('position').textContent = `${clock(audio.currentTime)} / ${clock(duration)}`;
}

function build(detail) {
  const row = detail.recording;
  const side = detail.sidecar || {};
  duration = (peaks && peaks.duration_s) || side.duration_s || row.duration_s || 0;
  timeline.dataset.duration = String(duration);
  const channels = (peaks && peaks.channels) || side.channels || row.channels || 1;
  const waves = el('div', { class: 'waves', style: null });
  waves.style.position = 'relative';
  const names = channels === 2 ? ['left channel', 'right channel'] : ['audio'];
  names.forEach((name, channel) => waves.append(el('div', { class: 'lane', 'data-lane': 'channel-' + channel },
    el('span', { class: 'label', text: name }), el('canvas', { 'data-channel': String(channel), 'aria-hidden': 'true' }))));
  const gaps = side.gaps || [];
  for (const gap of gaps) {
    const cause = gap.cause || 'other';
    const label = `${CAUSES[cause] || cause} gap at ${clock(gap.start_s)}, ${secs(gap.length_s, 3)}`;
    waves.append(place(span('gap cause-' + cause, gap.start_s, gap.length_s, label), gap.start_s, gap.length_s));
  }
  waves.append(el('div', { class: 'playhead' }));
  timeline.replaceChildren(waves);
  const texts = side.text_frames || [];
  if (texts.length) {
    const lane = el('div', { class: 'lane thin', 'data-lane': 'text' }, el('span', { class: 'label', text: 'text frames' }));
    for (const frame of texts) lane.append(place(span('marker', frame.t, 0, `text at ${clock(frame.t)}: ${frame.text.slice(0, 120)}`), frame.t, null));
    timeline.append(lane);
  }
  // The agent's turns (controller/relay/link.py): relay.turns = [{start_s, end_s, marks: [{t, name}], cleared_s}].
  const turns = (side.relay && side.relay.turns) || [];
  if (turns.length) {
    const lane = el('div', { class: 'lane thin', 'data-lane': 'agent' }, el('span', { class: 'label', text: 'agent turns' }));
    for (const turn of turns) {
      // end_s is null for a reply still playing when the recording ended: it lasts to the end.
      const start = Number(turn.start_s ?? 0), end = turn.end_s === null || turn.end_s === undefined ? duration : Number(turn.end_s);
      const label = `agent turn ${clock(start)}–${clock(end)}` + (turn.cleared_s !== undefined ? ` (cleared at ${clock(turn.cleared_s)})` : '');
      lane.append(place(span('turn', start, Math.max(0, end - start), label), start, Math.max(0, end - start)));
      for (const mark of turn.marks || []) {
        const t = Number(mark.t ?? mark);
        lane.append(place(span('marker', t, 0, `mark ${mark.name ? '"' + mark.name + '" ' : ''}at ${clock(t)}`), t, null));
      }
    }
    timeline.append(lane);
  }
  // Legend, the list of events (the same seeks, as a list: the keyboard's way in), figures, downloads.
  const legend = document.getElementById('legend');
  const causes = [...new Set(gaps.map((g) => g.cause || 'other'))];
  legend.replaceChildren(...[...causes.map((c) => el('span', {}, el('i', { class: 'gap cause-' + c, style: null }), CAUSES[c] || c)),
    texts.length ? el('span', {}, el('i', { class: 'marker' }), 'text frame') : null,
    turns.length ? el('span', {}, el('i', { class: 'turn' }), 'agent turn') : null].filter(Boolean));
  legend.querySelectorAll('i').forEach((i) => { i.style.position = 'static'; });
  const events = [
    ...gaps.map((g) => ({ t: g.start_s, text: `${CAUSES[g.cause] || g.cause} gap, ${secs(g.length_s, 3)}` })),
    ...texts.map((f) => ({ t: f.t, text: `text: ${f.text.slice(0, 200)}` })),
    ...turns.map((t) => ({ t: Number(t.start_s ?? 0), text: 'agent turn' + (t.cleared_s !== undefined && t.cleared_s !== null ? `, cleared at ${clock(t.cleared_s)} (barge-in)` : '') })),
  ].sort((a, b) => a.t - b.t);
  document.getElementById('events').replaceChildren(...(events.length ? events.map((e) => el('li', {},
    el('button', { type: 'button', text: clock(e.t), onclick: () => seek(e.t) }), ' ', e.text)) : [el('li', { class: 'muted', text: 'None.' })]));
  const figures = {
    caller: row.caller, destination: row.destination, rule: row.rule, started: when(row.start_time), ended: when(row.end_time),
    duration: secs(row.duration_s, 3), rate: row.rate, channels: row.channels, bytes: bytes(row.bytes),
    'close reason': row.close_reason, error: row.error, gaps: `${row.gaps} (${secs(row.gap_seconds, 3)})`,
    captured: `${secs(row.captured_s, 3)} (${Math.round((row.captured_ratio || 0) * 1000) / 10} %)`,
    connections: side.connections, 'text frames': texts.length, switch: row.switch, controller: row.controller_id,
    upload: row.upload_state, sha256: row.sha256, 'sidecar from': detail.sidecar_source,
  };
  if (row.relay) for (const [k, v] of Object.entries(row.relay)) if (typeof v !== 'object') figures['agent ' + k] = v;
  document.getElementById('figures').replaceChildren(...Object.entries(figures).filter(([, v]) => v !== null && v !== undefined && v !== '')
    .map(([k, v]) => el('div', {}, el('dt', { text: k }), el('dd', { text: String(v) }))));
  const links = [el('a', { href: detail.audio_url, download: row.recording_id + '.wav', text: 'Download the WAV' })];
  if (detail.sidecar) {
    const blob = new Blob([JSON.stringify(detail.sidecar, null, 1)], { type: 'application/json' });
    links.push(' · ', el('a', { href: URL.createObjectURL(blob), download: row.recording_id + '.json', text: 'Download the JSON sidecar' }));
  } else {
    links.push(' · ', el('span', { class: 'muted', text: `No sidecar: ${detail.sidecar_problem || 'not found'}; the timeline cannot be drawn.` }));
  }
  document.getElementById('downloads').replaceChildren(...links);
  drawWaves();
  updatePlayhead();
}

timeline.tabIndex = 0;
timeline.addEventListener('click', (event) => {
  const box = timeline.getBoundingClientRect();
  if (duration) seek(((event.clientX - box.left) / box.width) * duration);
});
timeline.addEventListener('keydown', (event) => {
  const step = event.shiftKey ? 5 : 1;
  if (event.key === 'ArrowRight') seek(audio.currentTime + step);
  else if (event.key === 'ArrowLeft') seek(audio.currentTime - step);
  else if (event.key === 'Home') seek(0);
  else if (event.key === ' ') { if (audio.paused) audio.play(); else audio.pause(); }
  else return;
  event.preventDefault();
});
audio.addEventListener('timeupdate', updatePlayhead);
audio.addEventListener('seeked', updatePlayhead);
window.addEventListener('resize', drawWaves);

async function load() {
  document.getElementById('title').textContent = id;
  try {
    const detail = await api('/console/api/recordings/' + encodeURIComponent(id));
    audio.src = detail.audio_url;
    try { peaks = await api('/console/api/recordings/' + encodeURIComponent(id) + '/peaks'); } catch (e) { peaks = null; }
    build(detail);
    document.body.dataset.loaded = 'yes';
  } catch (e) {
    document.getElementById('error').textContent = e.message;
  }
}

session().then(load).catch(() => {});
