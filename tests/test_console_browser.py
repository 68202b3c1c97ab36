"""The console in a real browser (issue #19): Debian's Chromium, headless, driven by Selenium through Debian's
chromedriver (scripts/test installs both with apt-get where missing), against a controller on the simulator.

A call appears on Live within a second of its answer, its bytes grow, it leaves within a second of its hangup;
its recording is then listed; its page plays, the gap spans sit where the sidecar says (within one pixel's worth
of time) and clicking one seeks there; a relayed call's agent turn is drawn where its recording holds the
agent's voice; a wrong token cannot log in; a page on another origin cannot log out or
start a test call with the session.

Screenshots of each page are taken on the way; with FSCTL_SCREENSHOTS=1 they are written to docs/ (the README's
Console section shows them), else to the test's temporary directory.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import time

import gevent
import pytest
from gevent.pywsgi import WSGIServer
from harness import RULE_9999

TOKEN = "tok-9f8e7d6c5b4a39281706"
HTTP = f"metrics: {{listen_host: 127.0.0.1, listen_port: 0}}\nhttp: {{token: {TOKEN}}}\n"
DOCS = pathlib.Path(__file__).resolve().parents[1] / "docs"


def _found(env: str, *names: str) -> str | None:
    given = os.environ.get(env)
    if given:
        return given
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.fixture(scope="module")
def browser():
    chromium = _found("FSCTL_CHROMIUM", "chromium", "chromium-browser")
    driver_path = _found("FSCTL_CHROMEDRIVER", "chromedriver")
    if not chromium or not driver_path:
        pytest.fail("the console's browser tests need Chromium and its driver: scripts/test installs them "
                    "(Debian: apt-get install chromium chromium-driver), or set FSCTL_CHROMIUM and FSCTL_CHROMEDRIVER")
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must never try to download a browser
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1280,900", "--autoplay-policy=no-user-gesture-required", "--mute-audio",
                     "--no-first-run", "--disable-extensions", "--hide-scrollbars"):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(driver_path))
    yield driver
    driver.quit()


@pytest.fixture
def shots(tmp_path):
    """shot(driver, name): a PNG of the page, into docs/ with FSCTL_SCREENSHOTS=1."""
    where = DOCS if os.environ.get("FSCTL_SCREENSHOTS") else tmp_path
    where.mkdir(exist_ok=True)

    def shot(driver, name: str) -> pathlib.Path:
        path = where / f"console-{name}.png"
        driver.save_screenshot(str(path))
        return path

    return shot


def until(driver, script: str, timeout: float, what: str, *args):
    """Poll a condition in the page (a JavaScript expression's truth) until it holds; its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = driver.execute_script(script, *args)
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        gevent.sleep(0.01)


def log_in(driver, base: str, token: str = TOKEN) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    driver.get(base + "/console/login")
    field = driver.find_element(By.ID, "token")
    field.clear()
    field.send_keys(token, Keys.ENTER)  # the keyboard's way


def test_a_call_is_live_then_listed_then_played_on_its_timeline(sim, harness, browser, shots):
    from selenium.webdriver.common.by import By

    h = harness(RULE_9999 + "  mix: stereo\n", extra=HTTP)
    base = f"http://127.0.0.1:{h.controller.http_port}"
    browser.delete_all_cookies()
    browser.set_window_size(1280, 900)
    log_in(browser, base)
    until(browser, "return location.pathname === '/console/live' && "
                   "document.querySelector('#health .state').textContent === 'Healthy'", 10, "Live, healthy")
    [cookie] = browser.get_cookies()
    assert (cookie["name"], cookie["httpOnly"], cookie["sameSite"], cookie["path"]) == \
        ("fsctl_session", True, "Strict", "/")
    assert 0 < cookie["expiry"] - time.time() <= 8 * 3600 + 5

    # Live: the call appears within a second of its answer, its bytes grow, it leaves within a second of its hangup.
    hung: list[float] = []
    call = sim.place_call("9999", duration_s=3.5)
    gevent.spawn(lambda: (call.hung_up.wait(), hung.append(time.monotonic())))
    assert call.answered.wait(5)
    row = f'tr[data-uuid="{call.uuid}"]'
    until(browser, f"return document.querySelector('{row}')", 5, "the call on Live")
    appeared_s = time.monotonic() - call.answered_at
    first = int(until(browser, f"return document.querySelector('{row} [data-bytes]').dataset.bytes", 2, "bytes"))
    grown = int(until(browser, f"const b = +document.querySelector('{row} [data-bytes]').dataset.bytes; "
                               f"return b > {first} + 1600 && b", 3, "the bytes to grow"))
    # The level meter: one per channel, and the simulated voice is well above silence.
    loudest = until(browser, f"const m = [...document.querySelectorAll('{row} .meter')].map(m => +m.dataset.db); "
                             "return m.length === 2 && Math.max(...m) > -40 && Math.max(...m)", 3, "a level")
    cells = browser.execute_script(f"return [...document.querySelectorAll('{row} td')].map(td => td.textContent)")
    assert cells[:6] == [call.uuid, "1000", "9999", "ext9999", "stereo / 8000", "streaming"]
    shots(browser, "live")
    [stream] = sim.streams_for(call.uuid)
    stream.send_text('{"note": "a text frame, shown as a marker"}')  # what the module relays: a marker on the timeline
    assert call.hung_up.wait(10)
    until(browser, f"return !document.querySelector('{row}')", 5, "the call to leave Live")
    gone_s = time.monotonic() - hung[0]
    print(f"\nLive: the call appeared {appeared_s * 1000:.0f} ms after its answer, bytes {first} -> {grown}, "
          f"left {gone_s * 1000:.0f} ms after its hangup; loudest level seen {loudest} dBFS")
    assert appeared_s < 1.0 and gone_s < 1.0

    # Recordings: listed, newest first; a filter that excludes it does.
    h.wait_closed(call.uuid)
    recording = h.recording(call.uuid)
    h.catalog_row(call.uuid)
    # The agent's turns as the timeline draws them (a relayed call's sidecar lists them, controller/relay/link.py;
    # this call has no agent, so its sidecar is given one, in that shape).
    sidecar_path = recording.path.with_suffix(".json")
    turn = {"start_s": 1.25, "end_s": 2.5, "marks": [{"t": 2.0, "name": "reply-1"}], "cleared_s": 2.5}
    sidecar_path.write_text(json.dumps({**recording.sidecar, "relay": {**(recording.sidecar.get("relay") or {}),
                                                                        "turns": [turn]}}))
    browser.get(base + "/console/recordings")
    listed = f'tr[data-id="{call.uuid}"]'
    until(browser, f"return document.querySelector('{listed}')", 5, "the recording listed")
    shots(browser, "recordings")
    browser.get(base + "/console/recordings?gaps=no")
    until(browser, "return document.body.dataset.loaded && !document.getElementById('none').hidden", 5,
          "no recording without gaps")
    assert browser.execute_script(f"return document.querySelector('{listed}')") is None
    browser.get(base + "/console/recordings?gaps=yes&caller=1000")
    until(browser, f"return document.querySelector('{listed} a')", 5, "the recording with gaps")
    browser.find_element(By.CSS_SELECTOR, f"{listed} a").click()

    # One recording: it plays; two lanes (stereo); the gaps where the sidecar says; clicking one seeks there.
    until(browser, "return document.body.dataset.loaded === 'yes'", 5, "the recording's page")
    assert browser.execute_script("return document.querySelectorAll('canvas[data-channel]').length") == 2
    gaps = recording.sidecar["gaps"]
    assert gaps, "a stereo call on the simulator starts with no audio: a gap"
    placed = browser.execute_script("""
        const waves = document.querySelector('.waves').getBoundingClientRect();
        return {width: waves.width, duration: +document.getElementById('timeline').dataset.duration,
                gaps: [...document.querySelectorAll('.waves .gap')].map(g => { const r = g.getBoundingClientRect();
                  return {left: r.left - waves.left, right: r.right - waves.left}; })};""")
    assert abs(placed["duration"] - recording.duration_s) < 1e-6
    pixel_s = placed["duration"] / placed["width"]
    assert len(placed["gaps"]) == len(gaps)
    for gap, box in zip(gaps, placed["gaps"]):
        start, end = box["left"] * pixel_s, box["right"] * pixel_s
        assert abs(start - gap["start_s"]) <= pixel_s + 1e-6, (gap, start)
        assert abs(end - (gap["start_s"] + gap["length_s"])) <= pixel_s + 1e-6, (gap, end)
    [text] = recording.sidecar["text_frames"]
    marker = browser.execute_script("""
        const waves = document.querySelector('.waves').getBoundingClientRect();
        const m = document.querySelector('[data-lane="text"] .marker').getBoundingClientRect();
        return (m.left + m.right) / 2 - waves.left;""")
    assert abs(marker * pixel_s - text["t"]) <= 2 * pixel_s, (marker * pixel_s, text)
    browser.execute_script("document.getElementById('audio').play()")
    played = until(browser, "const a = document.getElementById('audio'); return a.currentTime > 0.3 && a.currentTime",
                   10, "the player to play")
    shots(browser, "recording")
    browser.execute_script("document.getElementById('audio').pause()")
    target = max(gaps, key=lambda g: g["start_s"])
    index = gaps.index(target)
    browser.find_elements(By.CSS_SELECTOR, ".waves .gap")[index].click()
    until(browser, "return Math.abs(document.getElementById('audio').currentTime - arguments[0]) < 0.01", 5,
          "the player to seek to the gap", target["start_s"])
    span = browser.execute_script("""
        const waves = document.querySelector('.waves').getBoundingClientRect();
        const t = document.querySelector('[data-lane="agent"] .turn').getBoundingClientRect();
        return [t.left - waves.left, t.right - waves.left];""")
    assert abs(span[0] * pixel_s - turn["start_s"]) <= pixel_s and abs(span[1] * pixel_s - turn["end_s"]) <= pixel_s
    browser.find_element(By.CSS_SELECTOR, '[data-lane="agent"] .turn').click()
    until(browser, "return Math.abs(document.getElementById('audio').currentTime - arguments[0]) < 0.01", 5,
          "the player to seek to the agent's turn", turn["start_s"])

    # The keyboard: the timeline takes focus with Tab like any control; the arrows seek a second.
    from selenium.webdriver.common.keys import Keys

    timeline = browser.find_element(By.ID, "timeline")
    assert timeline.get_attribute("tabindex") == "0"
    before = browser.execute_script("return document.getElementById('audio').currentTime")
    timeline.send_keys(Keys.ARROW_LEFT)
    until(browser, "return Math.abs(document.getElementById('audio').currentTime - arguments[0]) < 0.01", 5,
          "the left arrow to seek back a second", max(0.0, before - 1))
    browser.find_element(By.CSS_SELECTOR, '[data-lane="text"] .marker').click()
    until(browser, "return Math.abs(document.getElementById('audio').currentTime - arguments[0]) < 0.01", 5,
          "the player to seek to the text frame", text["t"])
    print(f"Recording: played to {played:.2f} s; {len(gaps)} gap(s) placed within one pixel ({pixel_s * 1000:.1f} ms)")

    # The same page at a phone's width, and in dark.
    browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": [{"name": "prefers-color-scheme",
                                                                          "value": "dark"}]})
    shots(browser, "recording-dark")
    browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})
    browser.set_window_size(390, 844)
    browser.get(base + "/console/recordings")
    until(browser, f"return document.querySelector('{listed}')", 5, "the list at a phone's width")
    overflow = browser.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
    shots(browser, "recordings-phone")
    browser.set_window_size(1280, 900)
    assert overflow <= 0, "the page scrolls sideways at a phone's width (only the table may)"


def evil_site(target: str):
    """A page on another origin (another port) that posts forms to the console's listener when opened."""
    page = f"""<!doctype html><title>elsewhere</title>
<form id="f" method="post" action="{target}" enctype="text/plain"><input name='{{"seconds":2,"x":"' value='"}}'></form>
<script>document.getElementById('f').submit()</script>""".encode()

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/html"), ("Content-Length", str(len(page)))])
        return [page]

    server = WSGIServer(("127.0.0.1", 0), app, log=None)
    server.start()
    return server


def test_a_wrong_token_cannot_log_in_and_another_site_cannot_use_the_session(sim, harness, browser, shots):
    h = harness(extra=HTTP)
    base = f"http://127.0.0.1:{h.controller.http_port}"
    browser.delete_all_cookies()
    log_in(browser, base, "tok-wrong-000000000000")
    message = until(browser, "return document.getElementById('error').textContent", 5, "the refusal")
    assert message == "that is not the API token"
    assert browser.get_cookies() == []
    shots(browser, "login")
    browser.get(base + "/console/live")
    until(browser, "return location.pathname === '/console/login'", 5, "the way back to the login")
    assert browser.execute_script("return location.search") == "?next=%2Fconsole%2Flive"

    log_in(browser, base)
    until(browser, "return location.pathname === '/console/live'", 5, "Live")
    for target, what in ((base + "/console/logout", "log out"), (base + "/doctor/chain", "start a test call")):
        evil = evil_site(target)
        try:
            browser.get(f"http://127.0.0.1:{evil.server_port}/")
            text = until(browser, "return location.href === arguments[0] && document.body.innerText", 5,
                         f"the answer to the cross-site post ({what})", target)
        finally:
            evil.stop()
        assert "is refused" in text, text
    browser.get(base + "/console/api/session")
    assert '"csrf": "' in browser.find_element("tag name", "body").text  # still logged in
    assert [c for c in sim.received_commands if c.startswith("bgapi originate")] == []

    # The doctor's test call from Live: a change, so the page sends the session's CSRF token with it.
    browser.get(base + "/console/live")
    until(browser, "return document.querySelector('#health .state').textContent !== '…'", 5, "Live")
    browser.find_element("id", "doctor").click()
    steps = until(browser, "const s = [...document.querySelectorAll('#steps li')].map(li => li.className); "
                           "return s.length && !s.includes('') && s", 20, "the test call's steps")
    assert steps and set(steps) == {"ok"}, browser.find_element("id", "steps").text
    browser.set_window_size(390, 844)
    overflow = browser.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
    shots(browser, "live-phone")
    browser.set_window_size(1280, 900)
    assert overflow <= 0, "Live scrolls sideways at a phone's width (only the table may)"

    # Logging out (the button: a POST with the CSRF token) ends the session here and on the server.
    browser.find_element("id", "logout").click()
    until(browser, "return location.pathname === '/console/login'", 5, "the login after logging out")
    browser.get(base + "/console/api/session")
    assert "needs the API token" in browser.find_element("tag name", "body").text


def test_a_relayed_calls_turn_is_drawn_where_the_agent_is_heard_in_its_recording(sim, harness, browser, shots):
    """A real agent reply, relayed and played into the call: its turn span (and its mark) sit on the timeline
    where the stereo WAV's right channel (what the caller heard) holds the agent's audio."""
    from array import array

    from selenium.webdriver.common.by import By
    from test_relay_e2e import RATE, ScriptedAgent, relay_rule

    from controller.simulator import signals

    agent = ScriptedAgent()
    try:
        h = harness(relay_rule(agent.url) + "  mix: stereo\n", extra=HTTP)
        call = sim.place_call("9999", duration_s=30.0, auto_hangup=False, plays=None, app="endless_silence")
        deadline = time.monotonic() + 10
        while not (agent.connections and agent.messages("start")):
            assert time.monotonic() < deadline, "the agent never heard of the call"
            gevent.sleep(0.02)
        gevent.sleep(0.5)  # the caller on hold a moment: the reply lands mid-recording, not at its start
        agent.say(signals.tone(440, 1.0, RATE))
        agent.send({"event": "mark", "streamSid": agent.stream_sid(), "mark": {"name": "reply-1"}})
        while not agent.messages("mark"):
            assert time.monotonic() < deadline + 10, "the mark never came back"
            gevent.sleep(0.02)
        gevent.sleep(0.5)
        call.hangup()
        h.wait_closed(call.uuid)
    finally:
        agent.stop()
    recording = h.recording(call.uuid)
    [turn] = recording.sidecar["relay"]["turns"]
    right = array("h", recording.pcm)[1::2]  # stereo: left the caller, right what was played to the caller
    loud = [i for i, sample in enumerate(right) if abs(sample) > 1000]
    heard_from, heard_to = loud[0] / RATE, (loud[-1] + 1) / RATE
    print(f"\nthe agent heard from {heard_from:.3f} to {heard_to:.3f} s; its turn drawn {turn['start_s']} to "
          f"{turn['end_s']} s, mark at {turn['marks'][0]['t']} s")
    assert abs(heard_to - heard_from - 1.0) < 0.03  # the whole reply, once
    # Within a few 20 ms frames: the turn is placed by the controller's clock when the switch says, the audio by
    # the frames that carry it.
    assert abs(turn["start_s"] - heard_from) <= 0.1
    assert heard_to - 0.06 <= turn["end_s"] <= heard_to + 1.0  # broken once the last speech played, not before
    [mark] = turn["marks"]
    assert mark["name"] == "reply-1" and abs(mark["t"] - heard_to) <= 0.1

    base = f"http://127.0.0.1:{h.controller.http_port}"
    browser.delete_all_cookies()
    browser.set_window_size(1280, 900)
    log_in(browser, base)
    until(browser, "return location.pathname === '/console/live'", 10, "Live")
    row = h.catalog_row(call.uuid)
    browser.get(base + "/console/recording?id=" + row["recording_id"])
    until(browser, "return document.body.dataset.loaded === 'yes'", 10, "the recording's page")
    drawn = browser.execute_script("""
        const waves = document.querySelector('.waves').getBoundingClientRect();
        const box = (q) => { const r = document.querySelector(q).getBoundingClientRect();
                             return [r.left - waves.left, r.right - waves.left]; };
        return {width: waves.width, duration: +document.getElementById('timeline').dataset.duration,
                turn: box('[data-lane="agent"] .turn'), mark: box('[data-lane="agent"] .marker')};""")
    pixel_s = drawn["duration"] / drawn["width"]
    assert abs(drawn["turn"][0] * pixel_s - turn["start_s"]) <= pixel_s + 1e-6
    assert abs(drawn["turn"][1] * pixel_s - turn["end_s"]) <= pixel_s + 1e-6
    assert abs(sum(drawn["mark"]) / 2 * pixel_s - mark["t"]) <= 2 * pixel_s
    browser.find_element(By.CSS_SELECTOR, '[data-lane="agent"] .turn').click()
    until(browser, "return Math.abs(document.getElementById('audio').currentTime - arguments[0]) < 0.01", 5,
          "the player to seek to where the agent speaks", turn["start_s"])
    shots(browser, "recording-agent")
