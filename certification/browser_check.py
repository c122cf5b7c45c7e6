"""The browser check: a lane's `report.html` opened in headless Chromium, asserted to have rendered.

    python -m certification.browser_check                 # run the fast lane in a temp folder, check its page
    python -m certification.browser_check --pack DIR      # check an existing pack's page

The lane runs in `--work` (default: a new temp folder); its runs root and the check's scratch files
are removed at the end, its pack (with `report.png`) stays and its path is printed.

Chromium is Debian's `chromium` package: if no browser is found it is installed with apt-get (as
root, or through `sudo -n`); without apt-get the check says so in one line and fails. Not part of
the pytest suite (it needs the browser); `nox -s browser` and `.ci/run` run it.

What it asserts, each by a separate headless run of the page as shipped (never a modified copy):

1. screenshot (`report.png`, kept in the pack): the PNG has the window's size and is not blank
   (many colours, a good share of pixels away from the background);
2. console: Chromium's log (`--enable-logging=stderr --v=0`) holds no console message and no
   "Uncaught" from the page. The page has no script and a Content-Security-Policy that blocks any
   fetch but `data:` images, so any console line means a blocked fetch or a broken page;
3. DOM (`--dump-dom`): the verdict of the pack's record is the text of the page's verdict heading;
4. plots: a wrapper page in a temp folder loads the report in an iframe and, once loaded, loads
   every `<img>` of the report and every `data:` image of its stylesheet (where the plots live)
   and reads each plot element's computed background; it writes what it found into its own DOM,
   which `--dump-dom` returns. Every image must load to a bitmap with a size (a corrupted PNG is
   a broken image), there must be one per PNG of `plots/`, and every plot element must show one.

Then a negative control: a copy of the page with one plot's bytes corrupted and one external image
added must fail checks 2 and 4, so a green check means the assertions can see a broken page.
"""

from __future__ import annotations

import argparse
import html
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WINDOW = (1440, 900)
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--hide-scrollbars", "--disable-extensions",
         "--force-device-scale-factor=1"]
CANDIDATES = ("/usr/bin/chromium", "chromium", "chromium-browser")
APT_PACKAGES = ["chromium", "fonts-dejavu-core"]  # a font, so text renders on a minimal image
RESULT_ID = "seg2b-browser-check"


class CheckFailed(Exception):
    pass


# --------------------------------------------------------------------------------------------
# the browser


def find_chromium() -> str | None:
    env = os.environ.get("SEG2B_CHROMIUM")
    if env:
        found = env if Path(env).exists() else shutil.which(env)
        if not found:
            raise CheckFailed(f"SEG2B_CHROMIUM names {env!r}, which is not an executable")
        return found
    for c in CANDIDATES:
        path = c if os.path.isabs(c) and Path(c).exists() else shutil.which(c)
        if path:
            return path
    return None


def install_chromium(log=print) -> str:
    apt = shutil.which("apt-get")
    if apt is None:
        raise CheckFailed("chromium is not installed and apt-get is not available: install Debian's chromium "
                          "package (or point SEG2B_CHROMIUM at a Chromium binary) and rerun")
    prefix = []
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        if shutil.which("sudo") is None:
            raise CheckFailed("chromium is not installed and installing it needs root: run `apt-get install -y chromium` as root")
        prefix = ["sudo", "-n"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = [*prefix, apt, "install", "-y", "--no-install-recommends", *APT_PACKAGES]
    log(f"browser check: installing {' '.join(APT_PACKAGES)} with apt-get")
    done = subprocess.run(install, env=env, capture_output=True, text=True)
    if done.returncode != 0:  # a fresh machine has no package lists yet
        subprocess.run([*prefix, apt, "update"], env=env, capture_output=True, text=True)
        done = subprocess.run(install, env=env, capture_output=True, text=True)
    path = find_chromium()
    if done.returncode != 0 or path is None:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise CheckFailed(f"apt-get could not install chromium: {tail[0]}")
    return path


def run_chromium(chromium: str, args: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="seg2b-chromium-") as profile:
        cmd = [chromium, *FLAGS, f"--user-data-dir={profile}", *args]
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise CheckFailed(f"chromium did not finish within {timeout:.0f} s: {' '.join(args[-2:])}") from None


def console_lines(stderr: str) -> list[str]:
    """Console messages and uncaught errors from Chromium's log (every level is logged as CONSOLE)."""
    return [line for line in stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]


# --------------------------------------------------------------------------------------------
# the checks


def check_screenshot(path: Path) -> dict:
    from PIL import Image

    with Image.open(path) as im:
        rgb = im.convert("RGB")
        size = rgb.size
        colours = rgb.getcolors(maxcolors=1 << 20) or []
    total = size[0] * size[1]
    background = max(colours)[0] if colours else total
    facts = {"size": list(size), "colours": len(colours), "off_background_share": round(1 - background / total, 4),
             "bytes": path.stat().st_size}
    if list(size) != list(WINDOW):
        raise CheckFailed(f"screenshot is {size[0]}x{size[1]}, not the window's {WINDOW[0]}x{WINDOW[1]}")
    if len(colours) < 32 or facts["off_background_share"] < 0.05:
        raise CheckFailed(f"screenshot looks blank: {facts['colours']} colours, {facts['off_background_share']:.1%} "
                          "of pixels off the background")
    return facts


WRAPPER = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>browser check</title></head>
<body>
<iframe id="page" src="{src}" width="{w}" height="{h}"></iframe>
<pre id="{rid}">pending</pre>
<div id="probes"></div>
<script>
// Everything is read synchronously: --dump-dom returns once this document's load event is over,
// and probe images appended while the iframe's load handler runs hold that event back until they
// are loaded, so at window load every image has either a bitmap or failed.
const frame = document.getElementById("page");
const res = {{title: null, verdict: null, imgs: [], css_images: [], plots: [], details: 0, sections: [], scripts: 0}};
const urls = [];
function ok(img) {{ return img.complete && img.naturalWidth > 0 && img.naturalHeight > 0; }}
frame.addEventListener("load", () => {{
  try {{
    const d = frame.contentDocument;
    res.title = d.title;
    const v = d.querySelector(".verdict-text");
    res.verdict = v ? v.textContent.trim() : null;
    res.details = d.querySelectorAll("details").length;
    res.sections = Array.from(d.querySelectorAll("section[id]"), s => s.id);
    res.scripts = d.scripts.length;
    for (const img of Array.from(d.images)) res.imgs.push({{ok: ok(img), w: img.naturalWidth, h: img.naturalHeight}});
    for (const sheet of Array.from(d.styleSheets)) {{
      for (const rule of Array.from(sheet.cssRules)) {{
        const m = rule.style && /^url\\("(data:[^"]*)"\\)$/.exec(rule.style.backgroundImage || "");
        if (m && !urls.includes(m[1])) urls.push(m[1]);
      }}
    }}
    for (const el of Array.from(d.querySelectorAll(".plot"))) {{
      const m = /^url\\("(data:[^"]*)"\\)$/.exec(getComputedStyle(el).backgroundImage);
      res.plots.push({{shows_known_image: !!m && urls.includes(m[1]), label: el.getAttribute("aria-label")}});
    }}
    const probes = document.getElementById("probes");
    for (const u of urls) {{ const im = document.createElement("img"); im.src = u; probes.appendChild(im); }}
  }} catch (e) {{
    res.error = String(e);
  }}
}});
window.addEventListener("load", () => {{
  res.css_images = Array.from(document.querySelectorAll("#probes img"),
                              im => ({{ok: ok(im), w: im.naturalWidth, h: im.naturalHeight}}));
  document.getElementById("probes").remove();
  document.getElementById("{rid}").textContent = JSON.stringify(res);
}});
</script>
</body></html>
"""


def inspect_page(chromium: str, page: Path, work: Path) -> dict:
    """Load `page` in an iframe of a wrapper and return what the wrapper's script found."""
    wrapper = work / "wrapper.html"
    wrapper.write_text(WRAPPER.format(src=page.resolve().as_uri(), w=WINDOW[0], h=WINDOW[1], rid=RESULT_ID), encoding="utf-8")
    done = run_chromium(chromium, ["--allow-file-access-from-files", "--dump-dom", wrapper.as_uri()])
    m = re.search(rf'<pre id="{RESULT_ID}">(.*?)</pre>', done.stdout, re.S)
    if not m or m.group(1) == "pending":
        raise CheckFailed(f"the wrapper page never reported (chromium exit {done.returncode}): "
                          f"{(done.stderr.strip().splitlines() or ['no output'])[-1]}")
    found = json.loads(html.unescape(m.group(1)))
    if "error" in found:
        raise CheckFailed(f"the wrapper could not inspect the page: {found['error']}")
    return found


def plot_problems(found: dict, n_pngs: int) -> list[str]:
    problems = []
    bad_imgs = [i for i in found["imgs"] if not i["ok"]]
    if bad_imgs:
        problems.append(f"{len(bad_imgs)} of {len(found['imgs'])} <img> not decoded")
    bad_css = [i for i in found["css_images"] if not i["ok"]]
    if bad_css:
        problems.append(f"{len(bad_css)} of {len(found['css_images'])} stylesheet images not decoded")
    if len(found["css_images"]) + len(found["imgs"]) < n_pngs:
        problems.append(f"{len(found['css_images']) + len(found['imgs'])} images on the page for {n_pngs} PNGs in plots/")
    blank = [p["label"] for p in found["plots"] if not p["shows_known_image"]]
    if blank:
        problems.append(f"{len(blank)} plot element(s) without a decoded image: {', '.join(map(str, blank[:3]))}")
    return problems


def expected_heading(pack: Path) -> str:
    """The heading the pack's record calls for: a lane's verdict, or a sweep's best honest point."""
    lane = pack / "certification_record.json"
    if lane.is_file():
        return json.loads(lane.read_text(encoding="utf-8"))["verdict"]
    sweep = pack / "sweep_record.json"
    if sweep.is_file():
        best = json.loads(sweep.read_text(encoding="utf-8")).get("best_honest")
        return f"Best honest candidate: {best}" if best else "No honest candidate"
    raise CheckFailed(f"{pack} holds neither certification_record.json nor sweep_record.json")


def check_page(chromium: str, pack: Path, work: Path, screenshot: Path | None = None) -> dict:
    """Every assertion on `pack/report.html`; raises CheckFailed naming each problem."""
    pack = Path(pack)
    page = pack / "report.html"
    if not page.is_file():
        raise CheckFailed(f"no report.html in {pack}")
    expected = expected_heading(pack)
    facts: dict = {"page_bytes": page.stat().st_size}
    problems = []

    t = time.perf_counter()
    shot = screenshot or pack / "report.png"
    done = run_chromium(chromium, ["--enable-logging=stderr", "--v=0", f"--window-size={WINDOW[0]},{WINDOW[1]}",
                                   f"--screenshot={shot}", page.resolve().as_uri()])
    facts["screenshot_seconds"] = round(time.perf_counter() - t, 3)
    if not shot.is_file():
        raise CheckFailed(f"chromium wrote no screenshot (exit {done.returncode})")
    try:
        facts["screenshot"] = check_screenshot(shot)
    except CheckFailed as exc:
        problems.append(str(exc))
    console = console_lines(done.stderr)
    facts["console_lines"] = len(console)
    if console:
        problems.append(f"{len(console)} console message(s), first: {console[0].split('] ', 1)[-1][:160]}")

    dom = run_chromium(chromium, ["--dump-dom", page.resolve().as_uri()]).stdout
    m = re.search(r'<span class="verdict-text">([^<]*)</span>', dom)
    facts["dom_verdict"] = m.group(1) if m else None
    if facts["dom_verdict"] != expected:
        problems.append(f"verdict in the DOM is {facts['dom_verdict']!r}, the record says {expected!r}")

    found = inspect_page(chromium, page, work)
    n_pngs = len(list((pack / "plots").glob("*.png"))) if (pack / "plots").is_dir() else 0
    facts.update(images_decoded=sum(i["ok"] for i in found["imgs"] + found["css_images"]), pngs=n_pngs,
                 plot_elements=len(found["plots"]), details=found["details"], sections=found["sections"])
    problems += plot_problems(found, n_pngs)
    if found["verdict"] != expected:
        problems.append(f"verdict heading reads {found['verdict']!r} after load, the record says {expected!r}")
    if found["scripts"]:
        problems.append(f"the page carries {found['scripts']} script(s); it must work with JavaScript off")
    if problems:
        raise CheckFailed("; ".join(problems))
    return facts


def negative_control(chromium: str, pack: Path, work: Path) -> list[str]:
    """A broken copy of the page must fail: returns the problems the check saw (empty = blind check)."""
    broken = work / "broken"
    shutil.rmtree(broken, ignore_errors=True)
    shutil.copytree(pack, broken, ignore=shutil.ignore_patterns("report.png"))
    text = (broken / "report.html").read_text(encoding="utf-8")
    # corrupt the first plot's PNG bytes, and ask for an image from the network
    text = re.sub(r'url\("data:image/png;base64,[A-Za-z0-9+/]{64}', 'url("data:image/png;base64,' + "A" * 64, text, count=1)
    text = text.replace("</main>", '<img src="https://example.invalid/x.png" alt="x"></main>', 1)
    (broken / "report.html").write_text(text, encoding="utf-8")
    try:
        check_page(chromium, broken, work, screenshot=work / "broken.png")
    except CheckFailed as exc:
        return str(exc).split("; ")
    return []


# --------------------------------------------------------------------------------------------
# entry point


def run_fast_lane(work: Path) -> tuple[Path, float]:
    t = time.perf_counter()
    cmd = [sys.executable, "-m", "engine.cli", "certify", "--lane", "fast", "--quiet",
           "--runs-root", str(work / "runs"), "--evidence-root", str(work / "evidence")]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise CheckFailed(f"the fast lane failed (exit {done.returncode}): {(done.stderr.strip().splitlines() or [''])[-1]}")
    packs = sorted((work / "evidence" / "fast").iterdir())
    if not packs:
        raise CheckFailed("the fast lane wrote no evidence pack")
    return packs[-1], time.perf_counter() - t


SCRATCH = ("runs", "broken", "broken.png", "wrapper.html")  # what the check writes into --work besides evidence/


def tidy(work: Path, created: bool) -> None:
    """Remove the runs root and scratch files (the lane's pack, with report.png, stays); a work
    folder this run created is removed too once nothing else is left in it."""
    for name in SCRATCH:
        entry = work / name
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        elif entry.exists():
            entry.unlink()
    if created and work.is_dir() and not any(work.iterdir()):
        work.rmdir()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m certification.browser_check", description=__doc__.split("\n\n")[0])
    ap.add_argument("--pack", type=Path, default=None, help="check this pack's report.html (default: run the fast lane)")
    ap.add_argument("--work", type=Path, default=None,
                    help="folder for the lane run and scratch files (default: a new temp folder)")
    ap.add_argument("--no-control", action="store_true", help="skip the negative control (a broken copy must fail)")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    work = args.work or Path(tempfile.mkdtemp(prefix="seg2b-browser-"))
    try:
        chromium = find_chromium() or install_chromium()
        version = run_chromium(chromium, ["--version"], timeout=30).stdout.strip() or chromium
        work.mkdir(parents=True, exist_ok=True)
        lane_seconds = None
        pack = args.pack
        if pack is None:
            pack, lane_seconds = run_fast_lane(work)
        t = time.perf_counter()
        facts = check_page(chromium, pack, work)
        check_seconds = time.perf_counter() - t
        missed = None if args.no_control else negative_control(chromium, pack, work)
        if missed is not None and (not any("not decoded" in p for p in missed) or not any("console" in p for p in missed)):
            raise CheckFailed(f"the negative control was not caught (saw: {missed or 'nothing'}): the check is blind")
    except CheckFailed as exc:
        print(f"browser check: FAILED: {exc}", file=sys.stderr)
        return 1
    finally:
        tidy(work, created=args.work is None)
    shot = facts["screenshot"]
    print(f"browser check: passed ({version})")
    print(f"  page: {pack / 'report.html'} ({facts['page_bytes']:,} bytes); verdict {facts['dom_verdict']} in the DOM")
    print(f"  screenshot: {pack / 'report.png'} ({shot['size'][0]}x{shot['size'][1]}, {shot['colours']} colours, "
          f"{shot['off_background_share']:.0%} off background); console messages: {facts['console_lines']}")
    print(f"  images decoded: {facts['images_decoded']} for {facts['pngs']} PNGs; plot elements showing one: "
          f"{facts['plot_elements']}; details: {facts['details']}; sections: {len(facts['sections'])}")
    if missed is not None:
        print(f"  negative control caught: {'; '.join(p[:80] for p in missed)}")
    timing = f"check {check_seconds:.1f} s" + (f", fast lane {lane_seconds:.1f} s" if lane_seconds else "")
    print(f"  wall time: {time.perf_counter() - t0:.1f} s ({timing})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
