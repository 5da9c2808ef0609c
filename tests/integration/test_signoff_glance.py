"""The signoff a release manager trusts at a glance (issue 16), on a real release: a failure, a waiver, a combination
that never built and a baseline. Every section is rendered; the grid's links, the JUnit XML, the latency limit, the
trend and the recorded commit are checked in the files the signoff writes."""
import json
import shutil
import subprocess
from datetime import date, timedelta
from html.parser import HTMLParser
from xml.etree import ElementTree

import pytest

from pipeline.commands.signoff import main as signoff_main
from tests.conftest import REPO
from pipeline.release.signoff import MIN_MEASURABLE_MS, noise_margin
from tests.fixtures.matrix import combination, floor_waivers, write_matrix

pytestmark = pytest.mark.slow
GOOD, BAD, NEVER_BUILT = "digits_cnn-static-avx2", "digits_cnn-dynamic-avx2", "digits_cnn-qat-avx2"
NO_LIMIT = "release.max_latency_ratio=1000"


def make_release(tmp_path, digits_release, name="rc2"):
    """GOOD and BAD, each verified with another onnxruntime (two version sets used the same way), and a qat
    combination that did not build."""
    folder = tmp_path / "artifacts" / name
    for artifact, version in ((GOOD, "8.8.8"), (BAD, "9.9.9")):
        shutil.copytree(digits_release / artifact, folder / artifact)
        verify = json.loads((folder / artifact / "verify.json").read_text())
        verify["profiles"]["native"]["versions"]["onnxruntime"] = version
        (folder / artifact / "verify.json").write_text(json.dumps(verify))
    write_matrix(folder, combination(folder, GOOD, ["model=digits_cnn", "mode=static"]),
                 combination(folder, BAD, ["model=digits_cnn", "mode=dynamic"], outcome="fail"),
                 combination(folder, NEVER_BUILT, ["model=digits_cnn", "mode=qat"], outcome="build_failed",
                             reason="the accuracy gate refused it"))
    return folder


def waive(tmp_path, *profiles):
    return floor_waivers(tmp_path / "waivers.yaml", *(
        f"  - {{artifact: '{artifact}', profile: {profile}, reason: known, who: Release Manager, "
        f"expires: {(date.today() + timedelta(days=30)).isoformat()}}}\n" for artifact, profile in profiles))


def run(folder, out, *extra):
    if "--waivers" not in extra:  # natively verified: the floor CPU (haswell) is waived by name
        out.mkdir(parents=True, exist_ok=True)
        extra = (*extra, "--waivers", str(floor_waivers(out.parent / f"{out.name}.floor.yaml")))
    code = signoff_main(["--release", out.name, "--artifacts-dir", str(folder), "--out", str(out), *extra])
    return code, json.loads((out / "signoff.json").read_text())


class _Page(HTMLParser):
    """Element ids, links, and the grid table's cells (text and link of each)."""

    def __init__(self):
        super().__init__()
        self.ids, self.links, self.grid, self.headers = set(), [], [], []
        self._table, self._cell = None, None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.add(attrs["id"])
        if tag == "table":
            self._table = attrs.get("class")
        if tag in ("td", "th"):
            self._cell = {"tag": tag, "class": attrs.get("class", ""), "text": "", "href": None, "table": self._table}
        if tag == "a" and attrs.get("href", "").startswith("#"):
            self.links.append(attrs["href"][1:])
            if self._cell is not None:
                self._cell["href"] = attrs["href"][1:]

    def handle_data(self, data):
        if self._cell is not None:
            self._cell["text"] += " " + data

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._cell["text"] = " ".join(self._cell["text"].split())
            (self.grid if self._cell["table"] == "grid" else self.headers).append(self._cell)
            self._cell = None
        if tag == "table":
            self._table = None


@pytest.fixture(scope="module")
def baseline_and_release(digits_release, tmp_path_factory):
    """reports/rc1 (GOOD alone, with an older latency and fidelity), then rc2 against it."""
    tmp_path = tmp_path_factory.mktemp("glance")
    reports = tmp_path / "reports"
    rc1 = tmp_path / "artifacts" / "rc1"
    shutil.copytree(digits_release / GOOD, rc1 / GOOD)
    write_matrix(rc1, combination(rc1, GOOD, ["model=digits_cnn", "mode=static"]))
    assert run(rc1, reports / "rc1", NO_LIMIT)[0] == 0
    baseline = json.loads((reports / "rc1" / "signoff.json").read_text())  # what an older release measured
    baseline["artifacts"][0]["latency"]["p50_ratio"] += 0.5
    row = next(r for r in baseline["rows"] if r["profile"] == "native")
    row["figures"]["top1_agreement"] = 0.9
    (reports / "rc1" / "signoff.json").write_text(json.dumps(baseline))

    folder = make_release(tmp_path, digits_release)
    waivers = waive(tmp_path, (BAD, "native"))
    code, report = run(folder, reports / "rc2", "--waivers", str(waivers), "--baseline", "rc1", NO_LIMIT)
    return code, report, reports / "rc2", folder, waivers


def test_the_grid_links_every_cell_to_its_evidence(baseline_and_release):
    code, report, out, _, _ = baseline_and_release
    assert code == 1 and report["verdict"] == "blocked"  # the qat combination never built
    assert report["blocking"] == [f"{NEVER_BUILT} / build: build_failed: the matrix combination model=digits_cnn "
                                  f"mode=qat did not build: the accuracy gate refused it"]
    page = _Page()
    page.feed((out / "signoff.html").read_text())
    column = report["grid"]["columns"][0]
    assert column["name"] == "native" and column["label"].startswith("native (") and column["features"] > 0
    assert [c["text"] for c in page.grid if c["tag"] == "th"] == ["artifact", column["label"], "other checks",
                                                                  "runs on", "this host", ""]
    by_row = [c for c in page.grid if c["tag"] == "td"]
    texts = [c["text"] for c in by_row]
    # rows: GOOD, BAD, NEVER_BUILT; columns: artifact, native, other checks
    assert texts[0] == BAD and texts[1] == "waived 64 samples" and "pass" not in texts[1]
    assert texts[3] == GOOD and texts[4] == "pass 64 samples"
    assert texts[6] == NEVER_BUILT and texts[7] == "not verified"
    assert by_row[7]["href"] == f"ev-{NEVER_BUILT}--build" and texts[8] == "build: build_failed"
    # the "other checks" cell of a blocking check is framed red like a blocking CPU cell; a waived one is not
    assert "blocking" in by_row[8]["class"].split() and "blocking" not in by_row[5]["class"].split()
    assert by_row[4]["href"] == f"ev-{GOOD}--native" and by_row[1]["href"] == f"ev-{BAD}--native"
    assert set(page.links) <= page.ids  # every link lands on its evidence
    html = (out / "signoff.html").read_text()
    evidence = html.split(f'id="ev-{BAD}--native"')[1].split('class="evidence"')[0]
    assert "child_onnx" in evidence and 'profiles["native"]' in evidence and "&#34;requirement_met&#34;" in evidence
    markdown = (out / "signoff.md").read_text()
    assert f"[waived](#ev-{BAD}--native) (64 samples)" in markdown and f'<a id="ev-{GOOD}--native"></a>' in markdown


def test_completeness_lists_every_combination_and_a_missing_matrix_blocks(baseline_and_release, tmp_path):
    _, report, out, folder, _ = baseline_and_release
    completeness = report["completeness"]
    assert completeness["matrix"] and completeness["asked"] == 3 and completeness["in_release"] == 2
    assert [c["in_release"] for c in completeness["combinations"]] == [True, True, False]
    assert "2 of the 3 combination(s)" in (out / "signoff.md").read_text()
    (folder / "matrix.json").rename(tmp_path / "matrix.json")
    try:
        code, bare = run(folder, tmp_path / "bare", "--waivers", str(waive(tmp_path, (BAD, "native"))), NO_LIMIT)
        assert code == 1 and bare["blocking"][0].startswith("release / matrix: no_matrix: no matrix.json")
        waivers = waive(tmp_path, (BAD, "native"), ("release", "matrix"))
        code, waived = run(folder, tmp_path / "waived", "--waivers", str(waivers), NO_LIMIT)
        assert code == 0 and waived["verdict"] == "ready" and not waived["completeness"]["matrix"]
    finally:
        (tmp_path / "matrix.json").rename(folder / "matrix.json")


def test_junit_has_one_testcase_per_artifact_and_profile(baseline_and_release):
    _, _, out, _, _ = baseline_and_release
    suite = ElementTree.parse(out / "signoff.junit.xml").getroot()
    cases = {(c.get("classname"), c.get("name")): c for c in suite.iter("testcase")}
    assert {(GOOD, "native"), (BAD, "native"), (NEVER_BUILT, "native"), (NEVER_BUILT, "check: build")} <= set(cases)
    assert len(cases[(GOOD, "native")]) == 0  # passed
    assert cases[(BAD, "native")][0].tag == "skipped" and "waived" in cases[(BAD, "native")][0].get("message")
    assert cases[(NEVER_BUILT, "native")][0].tag == "skipped"
    failure = cases[(NEVER_BUILT, "check: build")][0]
    assert failure.tag == "failure" and "the accuracy gate refused it" in failure.get("message")
    assert suite.get("failures") == "1"


def test_latency_blocks_above_the_limit_and_its_noise_and_not_below(baseline_and_release, tmp_path):
    _, report, _, folder, waivers = baseline_and_release
    ratio = next(a for a in report["artifacts"] if a["name"] == GOOD)["latency"]["p50_ratio"]
    findings = {r["artifact"]: r for r in report["rows"] if r["profile"] == "latency"}
    figures, margin = findings[GOOD]["latency"], noise_margin(findings[GOOD]["latency"])
    strict_limit = ratio / (1 + margin) / 1.2
    code, strict = run(folder, tmp_path / "strict", "--waivers", str(waivers), f"release.max_latency_ratio={strict_limit}")
    row = next(r for r in strict["rows"] if r["artifact"] == GOOD and r["profile"] == "latency")
    if figures["fp32_p50_ms"] < MIN_MEASURABLE_MS:  # too fast to time on this host: reported, never judged
        assert row["status"] == "not_measurable" and row["outcome"] == "info" and "cannot be timed" in row["reason"]
        return
    assert findings[GOOD]["outcome"] == "ok" and "fp32" in findings[GOOD]["reason"]
    assert code == 1 and row["outcome"] == "failed" and f"{ratio:.2f}" in row["reason"]
    assert any(words.startswith(f"{GOOD} / latency: ") for words in strict["blocking"])
    assert strict["settings"]["release"]["max_latency_ratio"] == pytest.approx(strict_limit)
    _, noisy = run(folder, tmp_path / "noisy", "--waivers", str(waivers),
                   f"release.max_latency_ratio={ratio / (1 + margin / 2)}")
    row = next(r for r in noisy["rows"] if r["artifact"] == GOOD and r["profile"] == "latency")
    assert row["status"] == "within_noise" and row["outcome"] == "info" and "noise" in row["reason"]
    _, lenient = run(folder, tmp_path / "lenient", "--waivers", str(waivers), f"release.max_latency_ratio={ratio * 1.1}")
    assert not any(words.startswith(f"{GOOD} / latency") for words in lenient["blocking"])
    assert signoff_main(["--release", "x", "--artifacts-dir", str(folder), "--out", str(tmp_path / "x"),
                         "release.max_latency_ratio=fast"]) == 2


def test_a_size_budget_blocks_an_artifact_over_it(baseline_and_release, tmp_path):
    _, report, _, folder, waivers = baseline_and_release
    ratio = next(a for a in report["artifacts"] if a["name"] == GOOD)["size"]["ratio"]
    finding = next(r for r in report["rows"] if r["artifact"] == GOOD and r["profile"] == "size")
    assert finding["outcome"] == "ok" and "release.max_size_ratio 1" in finding["reason"]  # default: not above fp32
    code, strict = run(folder, tmp_path / "strict", "--waivers", str(waivers), NO_LIMIT,
                       f"release.max_size_ratio={ratio * 0.9}")
    row = next(r for r in strict["rows"] if r["artifact"] == GOOD and r["profile"] == "size")
    assert code == 1 and row["status"] == "too_large" and row["outcome"] == "failed"
    assert f"int8 is {ratio:.2f}x the fp32 size" in row["reason"]


def test_the_trend_names_what_changed_since_the_baseline(baseline_and_release):
    _, report, out, _, _ = baseline_and_release
    trend = report["trend"]
    assert trend["baseline"] == "rc1" and trend["baseline_verdict"] == "ready"
    words = {(c["artifact"], c["what"]): c["words"] for c in trend["changes"]}
    assert words[(GOOD, "fidelity")] == "native: top1 agreement 0.9000 -> 1.0000"
    assert words[(GOOD, "latency")].startswith("latency int8/fp32 ") and words[(BAD, "artifact")] == "new in this release"
    assert words[(GOOD, "versions")].startswith("verify: native: onnxruntime ") and words[(GOOD, "versions")].endswith(" -> 8.8.8")
    assert any(f.startswith(f"{BAD} / native") for f in trend["new_failures"])  # waived now, absent then
    markdown = (out / "signoff.md").read_text()
    assert "## Since rc1" in markdown and "top1 agreement 0.9000 -> 1.0000" in markdown


def test_commit_config_and_unique_version_headers_are_recorded(baseline_and_release):
    _, report, out, _, _ = baseline_and_release
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    assert report["quantgate"]["commit"].removesuffix("+dirty") == head
    good = next(a for a in report["artifacts"] if a["name"] == GOOD)
    assert good["resolved_config"]["verify"]["profiles"] == ["native"], good["resolved_config_note"]
    assert head in (out / "signoff.html").read_text()
    labels = [group["label"] for group in report["versions"]]
    assert len(labels) == len(set(labels)) and len(labels) >= 3  # build, and two verification sets
    page = _Page()
    page.feed((out / "signoff.html").read_text())
    version_headers = [c["text"] for c in page.headers if c["tag"] == "th" and c["text"] in labels]
    assert sorted(version_headers) == sorted(labels)
    assert (out / "fidelity.png").is_file() and (out / "ratios.png").is_file()


def test_latency_of_a_native_runtime_profile_is_found(digits_release, tmp_path):
    """verify.json of `verify.profiles=[native@ort116]`: the profile is `native@ort116`, no top-level latency."""
    folder = tmp_path / "artifacts" / "rc"
    shutil.copytree(digits_release / GOOD, folder / GOOD)
    verify = json.loads((folder / GOOD / "verify.json").read_text())
    verify["profiles"]["native@ort116"] = verify["profiles"].pop("native")
    verify["profiles"]["native@ort116"]["latency"].pop("fp32", None)  # the verifier adds it for `native` only
    verify["latency"] = None
    (folder / GOOD / "verify.json").write_text(json.dumps(verify))
    write_matrix(folder, combination(folder, GOOD, ["model=digits_cnn", "mode=static"]))
    code, report = run(folder, tmp_path / "rc", NO_LIMIT)
    assert code == 0 and report["artifacts"][0]["latency"]["profile"] == "native@ort116"
    assert report["grid"]["columns"][0]["name"] == "native@ort116"
    assert "not measured" not in (tmp_path / "rc" / "signoff.md").read_text()


def chromium(*args: str) -> subprocess.CompletedProcess:
    """Debian's chromium, headless (root needs --no-sandbox)."""
    browser = shutil.which("chromium")
    if browser is None:
        pytest.skip("needs Debian's chromium for the headless-browser check: `apt-get install chromium` (make setup)")
    return subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--disable-dev-shm-usage", *args], capture_output=True, text=True, timeout=180)


def test_a_real_browser_renders_the_grid_and_every_link_lands(baseline_and_release, tmp_path):
    """The page as Chromium builds it: every in-page link has its anchor in the rendered DOM, and the screenshot
    shows the grid's cells in their colours (pass, waived, not verified) and the blocking frame."""
    import numpy as np
    from PIL import Image

    _, report, out, _, _ = baseline_and_release
    url = (out / "signoff.html").as_uri()
    dom = chromium("--dump-dom", url)
    assert dom.returncode == 0 and "<table class=\"grid\">" in dom.stdout, dom.stderr[-500:]
    page = _Page()
    page.feed(dom.stdout)
    assert page.links and set(page.links) <= page.ids, sorted(set(page.links) - page.ids)
    cells = [c for c in page.grid if c["tag"] == "td" and c["href"]]
    assert {c["href"] for c in cells} >= {f"ev-{BAD}--native", f"ev-{GOOD}--native", f"ev-{NEVER_BUILT}--build"}

    shot = tmp_path / "grid.png"
    taken = chromium(f"--screenshot={shot}", "--window-size=1400,1400", url)
    assert taken.returncode == 0 and shot.is_file(), taken.stderr[-500:]
    pixels = np.asarray(Image.open(shot).convert("RGB")).reshape(-1, 3)
    colours = {tuple(p) for p in np.unique(pixels, axis=0)}
    expected = {"pass": (0xe6, 0xf4, 0xea), "waived": (0xff, 0xf8, 0xe1), "not verified": (0xee, 0xf1, 0xf4),
                "blocked verdict": (0xfd, 0xec, 0xea), "blocking frame": (0xc6, 0x28, 0x28)}
    missing = [state for state, rgb in expected.items() if rgb not in colours]
    assert not missing, f"the screenshot shows no {missing} cell (colours as in signoff.html.j2)"
