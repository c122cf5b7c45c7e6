"""The browser check's judgements, without a browser (the check itself runs in `nox -s browser`)."""

from __future__ import annotations

import pytest
from PIL import Image, ImageDraw

from certification.browser_check import WINDOW, CheckFailed, check_screenshot, console_lines, plot_problems


def test_console_lines_catch_every_level_and_uncaught_errors():
    stderr = "\n".join([
        "[1:1:1130/081632.841189:ERROR:dbus/object_proxy.cc:572] Failed to call method",  # Chromium's own noise
        '[1:1:1130/081632.841189:INFO:CONSOLE:0] "Loading the image \'https://x\' violates ...", source: file:///r.html (0)',
        '[1:1:1130/081632.9:ERROR:CONSOLE(3)] "Uncaught TypeError: x is undefined", source: file:///r.html (3)',
    ])
    found = console_lines(stderr)
    assert len(found) == 2 and "violates" in found[0] and "Uncaught" in found[1]
    assert console_lines("[1:1:1130/0:ERROR:dbus/object_proxy.cc:572] Failed") == []


def test_plot_problems_name_undecoded_missing_and_blank_plots():
    good = {"imgs": [], "css_images": [{"ok": True}] * 3, "plots": [{"shows_known_image": True, "label": "a"}]}
    assert plot_problems(good, 3) == []
    bad = {"imgs": [{"ok": False}], "css_images": [{"ok": True}, {"ok": False}],
           "plots": [{"shows_known_image": False, "label": "S4: max p"}]}
    problems = " | ".join(plot_problems(bad, 4))
    assert "1 of 1 <img> not decoded" in problems and "1 of 2 stylesheet images not decoded" in problems
    assert "3 images on the page for 4 PNGs" in problems and "S4: max p" in problems


def test_screenshot_must_have_the_window_size_and_content(tmp_path):
    blank = tmp_path / "blank.png"
    Image.new("RGB", WINDOW, "white").save(blank)
    with pytest.raises(CheckFailed, match="blank"):
        check_screenshot(blank)
    small = tmp_path / "small.png"
    Image.new("RGB", (100, 100), "white").save(small)
    with pytest.raises(CheckFailed, match="not the window"):
        check_screenshot(small)
    drawn = Image.new("RGB", WINDOW, "white")
    pen = ImageDraw.Draw(drawn)
    for i in range(64):
        pen.rectangle([i * 20, 0, i * 20 + 19, 400], fill=(4 * i, 255 - 4 * i, 128))
    path = tmp_path / "drawn.png"
    drawn.save(path)
    facts = check_screenshot(path)
    assert facts["colours"] >= 64 and facts["off_background_share"] > 0.3
