"""Sessions: tests, fast (seed 42), witness (42, 7), certify (42, 7, 101, 202), bench, ab, lint,
browser.

Lane sessions accept the CLI's overrides after `--`, e.g.
`nox -s fast -- --policies DIR --world-policy FILE --runs-root DIR --evidence-root DIR`.
"""

import nox

nox.options.sessions = ["tests"]
nox.options.reuse_existing_virtualenvs = True


def _install(session):
    session.install("-e", ".[dev]")


@nox.session
def tests(session):
    _install(session)
    session.run("python", "-m", "pytest", "-q", *session.posargs)


def _lane(session, lane):
    _install(session)
    session.run("seg2b", "certify", "--lane", lane, *session.posargs)


@nox.session
def fast(session):
    _lane(session, "fast")


@nox.session
def witness(session):
    _lane(session, "witness")


@nox.session
def certify(session):
    _lane(session, "certify")


@nox.session
def bench(session):
    """Absolute figures for docs/performance.md (evidence/benchmarks.json); no gate."""
    _install(session)
    session.run("python", "-m", "pytest", "benchmarks", "--benchmark-only",
                "--benchmark-json", "evidence/benchmarks.json", *session.posargs)


@nox.session
def browser(session):
    """The fast lane's report.html opened in headless Chromium (Debian's package, installed with
    apt-get when missing): screenshot kept as report.png, verdict in the DOM, every plot decoded,
    no console message. `-- --pack DIR` checks an existing pack instead."""
    _install(session)
    session.run("python", "-m", "certification.browser_check", *session.posargs)


@nox.session
def ab(session):
    """The A/B runtime gate: benchmarks/ab_base.json's commit against this tree, e.g.
    `nox -s ab -- --rounds 12 --stages S4,S5` (options: python -m benchmarks.ab --help)."""
    _install(session)
    session.run("python", "-m", "benchmarks.ab", *session.posargs)


@nox.session
def lint(session):
    """ruff over the code folders and mypy strict on the law modules, as `.ci/run` runs them. The
    project is installed too: the pinned versions come from the dev extra, and mypy reads numpy's
    and polars' own types."""
    _install(session)
    session.run("python", "-m", "ruff", "check", "engine", "certification", "tests", "benchmarks")
    session.run("python", "-m", "mypy")
