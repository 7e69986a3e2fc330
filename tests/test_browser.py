"""A user's walk through the app in real headless Chromium: Compare -> Fine-tune -> Evaluate.

Run: pytest tests/test_browser.py   (needs Debian's chromium at /usr/bin/chromium; .ci/run installs it)
Screenshots land in test-artifacts/.
"""

import os
import re
import shutil
import zipfile
from pathlib import Path

import pytest

from llmft.packaged import MINILM
from llmft.training import TrainConfig, train
from llmft.ui import build_app, launch
from tests.conftest import free_port

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
pytestmark = pytest.mark.skipif(
    not os.path.exists(CHROMIUM) and not os.environ.get("CI"),
    reason="Debian chromium is not installed (CI installs it)",
)


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    runs = tmp_path_factory.mktemp("browser-runs")
    train(TrainConfig(task="sentiment", model=MINILM, runs_dir=str(runs), run_name="demo"), show_progress=False)
    app = build_app(str(runs))
    _, url, _ = launch(app, server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True)
    yield url
    app.close()


@pytest.fixture(scope="module")
def page(app_url):
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.set_default_timeout(60_000)
        page.goto(app_url)
        yield page
        browser.close()


def enter(field, value: str) -> None:
    """Type `value` into `field`, commit it (Tab: a number field keeps its old value until blur) and check it holds.
    Gradio mounts a tab's or accordion's fields when it is first shown; on a busy machine a field typed into while
    it mounts comes back with its default, as it would for a person: then it is typed again, at most twice more."""
    from playwright.sync_api import expect

    for attempt in range(3):
        field.fill(value)
        field.press("Tab")
        try:
            expect(field).to_have_value(value, timeout=5_000)
            return
        except AssertionError:
            if attempt == 2:
                raise


def open_hyperparameters(page) -> None:
    """Open Fine-tune's hyperparameter fields: closed, the form runs the preset's values."""
    from playwright.sync_api import expect

    steps = page.locator("#ft-max_steps")
    if not steps.is_visible():
        page.get_by_text("Hyperparameters (blank = the preset's value", exact=False).click()
    expect(steps).to_be_visible()


def test_compare_fine_tune_evaluate(page):
    from playwright.sync_api import expect

    # Compare: the tuned sentiment model on a clearly positive review.
    page.get_by_label("Text", exact=True).fill("A wonderful, moving film. The cast was brilliant and I loved it.")
    page.get_by_role("button", name="Compare", exact=True).click()
    expect(page.get_by_label("Tuned", exact=True)).to_have_value("Positive")
    expect(page.get_by_text("Tuned class probabilities")).to_be_visible()
    page.screenshot(path=str(ARTIFACTS / "compare.png"), full_page=True)

    # Fine-tune: a tiny run from the browser, followed to completion.
    page.get_by_role("tab", name="Fine-tune").click()
    field = lambda name: page.locator(f"#ft-{name}").locator("textarea, input").first  # noqa: E731
    enter(field("model"), "minilm")
    # The form opens short: the run's name in view, the hyperparameters the preset's until opened; one Start.
    expect(page.locator("#ft-run_name")).to_be_visible()
    expect(page.locator("#ft-learning_rate")).to_be_hidden()
    expect(page.get_by_role("button", name=re.compile("^Start"))).to_have_count(1)
    open_hyperparameters(page)
    enter(field("max_steps"), "40")
    enter(field("time_budget"), "0")  # exactly 40 steps, however busy the machine (the quick preset's 60 s off)
    enter(field("run_name"), "browser-run")
    page.get_by_role("button", name="Start").click()
    expect(page.get_by_text("Started run browser-run")).to_be_visible(timeout=60_000)  # the child has started
    expect(page.get_by_text("python -m llmft train --task sentiment", exact=False)).to_be_visible()
    expect(page.get_by_text("browser-run — completed", exact=False)).to_be_visible(timeout=120_000)
    expect(page.get_by_text("step 40 / 40", exact=False)).to_be_visible()
    page.screenshot(path=str(ARTIFACTS / "finetune.png"), full_page=True)

    # Evaluate this run: the button switches tabs with the run picked.
    page.get_by_role("button", name="Evaluate this run").click()
    expect(page.get_by_role("tab", name="Evaluate", selected=True)).to_be_visible()
    enter(page.get_by_label("Examples", exact=True), "30")
    page.get_by_role("button", name="Evaluate", exact=True).click()
    expect(page.get_by_text("run browser-run, n = 30", exact=False)).to_be_visible(timeout=120_000)
    page.wait_for_timeout(1500)  # let plotly draw before the screenshot
    page.screenshot(path=str(ARTIFACTS / "evaluate.png"), full_page=True)
    summary = page.locator("#summary-table")
    for metric in ("macro_f1", "accuracy", "positive_f1", "p_true_label", "mcnemar", "permutation"):
        expect(summary).to_contain_text(metric)
    expect(page.locator("#boxplot .js-plotly-plot")).to_be_visible()
    expect(page.locator("text.gtitle", has_text="base confusion matrix")).to_be_visible()
    # The fine-tune worked: tuned accuracy beats base in the table the user reads.
    verdict = page.locator("#verdict").inner_text()
    base, tuned = (float(x) for x in re.search(r"base ([0-9.]+) → tuned ([0-9.]+)", verdict).groups())
    assert tuned > base + 0.2 and "tuned is better than base on macro_f1" in verdict, verdict

    # Runs: a click on the run's row picks it, and one click on Download saves its adapter with llmft's card.
    page.get_by_role("tab", name="Runs").click()
    clicked = page.locator("#runs-table").get_by_text("browser-run", exact=True).locator("visible=true").first
    clicked.click()
    expect(page.locator("#runs-pick").locator("input").first).to_have_value("browser-run")
    # The clicked cell does not look like a spreadsheet cell opened for editing: no accent ring, no row/column
    # selection buttons (Gradio's defaults for a clicked cell).
    accent = page.evaluate("() => getComputedStyle(document.body).getPropertyValue('--color-accent')")
    ring = clicked.evaluate("e => getComputedStyle(e).boxShadow")
    assert "inset" not in ring, (ring, accent)
    expect(page.locator("#runs-table .selection-button").locator("visible=true")).to_have_count(0)
    # No header wraps a letter to a line (an empty column's did, and pushed the rows out of the table's view).
    heights = [box["height"] for box in map(lambda th: th.bounding_box(), page.locator("#runs-table th").all()) if box]
    assert heights and max(heights) < 100, heights
    download_button = page.locator("#runs-download")
    expect(download_button).to_be_enabled(timeout=30_000)
    with page.expect_download() as saving:
        download_button.click()
    saved = saving.value
    assert saved.suggested_filename == "browser-run-adapter.zip"
    with zipfile.ZipFile(saved.path()) as archive:
        names = archive.namelist()
        card = archive.read("README.md").decode()
    assert "adapter_model.safetensors" in names and "adapter_config.json" in names, names
    assert "browser-run" in card and "More Information Needed" not in card


def test_own_csv_train_evaluate_on_held_out_compare_and_delete(page, tmp_path):
    """A new user's journey with their own data: pos/neg labels, a held-out file, and a delete that asks."""
    from playwright.sync_api import expect

    words = {"pos": "great lovely superb moving", "neg": "awful dull boring weak"}
    files = {}
    for name, count in (("my reviews", 96), ("held out", 40)):
        rows = [f"{words['pos' if i % 2 else 'neg']} {name} {i},{'pos' if i % 2 else 'neg'}" for i in range(count)]
        files[name] = tmp_path / f"{name}.csv"
        files[name].write_text("review,sentiment\n" + "\n".join(rows) + "\n")

    def field(name):
        return page.locator(f"#{name}").locator("textarea, input").first

    # Fine-tune on the uploaded file: the columns are guessed from the preview, pos/neg need no mapping.
    page.get_by_role("tab", name="Fine-tune").click()
    page.locator("#ft-source").get_by_label("upload").check()
    page.locator("#ft-upload input[type=file]").set_input_files(str(files["my reviews"]))
    expect(field("ft-text_column")).to_have_value("review", timeout=30_000)
    expect(field("ft-label_column")).to_have_value("sentiment")
    field("ft-model").fill("minilm")
    open_hyperparameters(page)
    field("ft-max_steps").fill("30")
    field("ft-learning_rate").fill("0.005")
    field("ft-run_name").fill("own-csv")
    page.get_by_role("button", name="Start").click()
    expect(page.get_by_text("Started run own-csv")).to_be_visible(timeout=60_000)
    expect(page.get_by_text("own-csv — completed", exact=False)).to_be_visible(timeout=180_000)
    expect(page.get_by_role("button", name="Cancel")).to_be_disabled()  # nothing runs any more
    page.screenshot(path=str(ARTIFACTS / "finetune-own-csv.png"), full_page=True)

    # Evaluate on the held-out upload: the header names the file as the user named it.
    page.get_by_role("button", name="Evaluate this run").click()
    page.locator("#ev-source").get_by_label("upload").check()
    page.locator("#ev-upload input[type=file]").set_input_files(str(files["held out"]))
    expect(field("ev-text_column")).to_have_value("review", timeout=30_000)
    page.get_by_role("button", name="Evaluate", exact=True).click()
    verdict = page.locator("#verdict")
    expect(verdict).to_contain_text("held out.csv", timeout=120_000)
    expect(verdict).to_contain_text("on macro_f1")
    expect(page.locator("#proportions .js-plotly-plot")).to_be_visible()
    page.wait_for_timeout(1500)
    page.screenshot(path=str(ARTIFACTS / "evaluate-own-csv.png"), full_page=True)

    # Compare with the new run.
    page.get_by_role("tab", name="Compare").click()
    adapter = page.get_by_label("Tuned adapter (run, folder or hub id)")
    adapter.fill("own-csv")
    adapter.press("Enter")
    page.get_by_label("Text", exact=True).fill("A lovely, superb and moving film.")
    page.get_by_label("Reference (optional: summary or label)").fill("pos")
    page.get_by_role("button", name="Compare", exact=True).click()
    expect(page.get_by_label("Tuned", exact=True)).to_have_value("Positive", timeout=60_000)
    page.screenshot(path=str(ARTIFACTS / "compare-own-csv.png"), full_page=True)

    # Delete asks first, deletes the run it named, and leaves no run selected.
    page.get_by_role("tab", name="Runs").click()
    runs_picker = field("runs-pick")
    runs_picker.fill("own-csv")
    runs_picker.press("Enter")
    page.get_by_role("button", name="Delete run…").click()
    expect(page.get_by_text("Delete run own-csv and its adapter", exact=False)).to_be_visible()
    page.screenshot(path=str(ARTIFACTS / "runs-delete.png"), full_page=True)
    page.get_by_role("button", name="Yes, delete it").click()
    expect(page.get_by_text("Deleted run own-csv.")).to_be_visible(timeout=30_000)
    expect(page.get_by_role("button", name="Yes, delete it")).to_be_hidden()
    assert "demo" in page.locator("#runs-table").inner_text()  # the other runs are still there


def test_your_own_three_class_task_from_the_browser(page, app_url, topic_data):
    """Your own task: a 3-class topic classifier defined in the form, trained on an upload, evaluated on a
    held-out upload (per-class table, 3x3 confusion matrices) and compared (three class bars)."""
    from playwright.sync_api import expect

    _, train_csv, test_csv = topic_data
    page.goto(app_url)  # a fresh page: the earlier journeys left an upload and other choices in the form

    def field(name):
        return page.locator(f"#{name}").locator("textarea, input").first

    page.get_by_role("tab", name="Fine-tune").click()
    task = field("ft-task")
    task.fill("your own task")
    task.press("Enter")
    field("ft-own_name").fill("news-topic")
    page.locator("#ft-source").get_by_label("upload").check()
    page.locator("#ft-upload input[type=file]").set_input_files(train_csv)
    expect(field("ft-text_column")).to_have_value("sentence", timeout=30_000)
    expect(field("ft-label_column")).to_have_value("topic")  # the column with the fewest distinct values
    field("ft-model").fill("minilm")
    open_hyperparameters(page)
    field("ft-max_steps").fill("40")
    field("ft-learning_rate").fill("0.003")
    field("ft-run_name").fill("news-topic-run")
    page.get_by_role("button", name="Start").click()
    expect(page.get_by_text("Started run news-topic-run")).to_be_visible(timeout=60_000)
    expect(page.get_by_text("--task", exact=False).filter(has_text="news-topic.yaml")).to_be_visible()
    expect(page.get_by_text("news-topic-run — completed", exact=False)).to_be_visible(timeout=180_000)
    page.screenshot(path=str(ARTIFACTS / "finetune-own-task.png"), full_page=True)

    page.get_by_role("button", name="Evaluate this run").click()
    # A run trained on an upload has no test sample of its own: the test data switches to an upload, and says why.
    expect(page.locator("#ev-source").get_by_label("upload")).to_be_checked(timeout=30_000)
    expect(page.locator("#evaluate-status")).to_contain_text("was trained on your file")
    page.locator("#ev-upload input[type=file]").set_input_files(test_csv)
    expect(field("ev-text_column")).to_have_value("sentence", timeout=30_000)
    page.get_by_role("button", name="Evaluate", exact=True).click()
    verdict = page.locator("#verdict")
    expect(verdict).to_contain_text("tuned is better than base on macro_f1", timeout=120_000)
    classes = page.locator("#class-table")
    for label in ("Food", "Sports", "Tech"):
        expect(classes).to_contain_text(label)
    expect(page.locator("text.gtitle", has_text="tuned confusion matrix")).to_be_visible()
    # Three classes: the tuned confusion matrix has three rows of cells.
    assert (
        page.locator(".js-plotly-plot", has=page.locator("text.gtitle", has_text="tuned confusion matrix"))
        .locator("g.ytick")
        .count()
        == 3
    )
    page.wait_for_timeout(1500)
    page.screenshot(path=str(ARTIFACTS / "evaluate-own-task.png"), full_page=True)
    # An evaluation that fails leaves no earlier result under its error, as if it were this one's.
    page.locator("#ev-source").get_by_label("the run's test sample").check()
    page.get_by_role("button", name="Evaluate", exact=True).click()
    expect(page.locator("#evaluate-status")).to_contain_text("has no test sample of its own", timeout=30_000)
    expect(verdict).not_to_contain_text("tuned is better")
    expect(page.locator("#class-table")).to_be_hidden()

    # Compare lists every finished run: picking this one switches the task to its own.
    page.get_by_role("tab", name="Compare").click()
    adapter = page.get_by_label("Tuned adapter (run, folder or hub id)")
    adapter.fill("news-topic-run")
    adapter.press("Enter")
    expect(field("cmp-task")).to_have_value("news-topic", timeout=30_000)
    expect(adapter).to_have_value("news-topic-run")
    page.get_by_label("Text", exact=True).fill("Frankly, the striker scored twice.")
    page.get_by_role("button", name="Compare", exact=True).click()
    expect(page.get_by_label("Tuned", exact=True)).to_have_value("Sports", timeout=60_000)
    bars = page.locator("#cmp-tuned-probs")
    for label in ("Food", "Sports", "Tech"):  # a probability bar per class
        expect(bars).to_contain_text(label)
    page.get_by_text("Prompt as the model reads it").click()
    expect(field("cmp-prompt")).to_have_value("Frankly, the striker scored twice.")
    page.screenshot(path=str(ARTIFACTS / "compare-own-task.png"), full_page=True)


def test_a_space_visitor_signs_in_to_train_and_sees_only_their_own_runs(space, page):
    """Space mode in the browser: an anonymous visitor sees the sign-in button and public runs only, and Start
    tells them to sign in; signed in (the session cookie Gradio's login sets), Alice sees her own run too and
    not Bob's."""
    from playwright.sync_api import expect

    from tests.conftest import session_cookie

    browser = page.context.browser  # the module's browser: one Playwright per thread
    anonymous = browser.new_context(viewport={"width": 1280, "height": 1000})
    try:
        page = anonymous.new_page()
        page.set_default_timeout(60_000)
        page.goto(space.url)
        expect(page.get_by_role("button", name=re.compile("Sign in with Hugging Face"))).to_be_visible()
        page.get_by_role("tab", name="Runs").click()
        table = page.locator("#runs-table")
        expect(table).to_contain_text("demo")
        expect(table).not_to_contain_text("alice-run")
        page.get_by_role("tab", name="Fine-tune").click()
        expect(page.get_by_text("Sign in with Hugging Face (top of the page) to train")).to_be_visible()
        page.get_by_role("button", name="Start").click()
        expect(
            page.get_by_text("sign in with Hugging Face (the button at the top of the page) to train")
        ).to_be_visible()
        page.screenshot(path=str(ARTIFACTS / "space-anonymous.png"), full_page=True)

        context = browser.new_context(viewport={"width": 1280, "height": 1000})
        context.add_cookies([{"name": "session", "value": session_cookie("alice"), "url": space.url}])
        page = context.new_page()
        page.goto(space.url)
        expect(page.get_by_role("button", name=re.compile("alice"))).to_be_visible()  # "Logout (alice)"
        page.get_by_role("tab", name="Runs").click()
        table = page.locator("#runs-table")
        expect(table).to_contain_text("alice-run")
        expect(table).not_to_contain_text("bob-run")
        expect(page.get_by_role("button", name="Share with every visitor")).to_be_visible()
        page.screenshot(path=str(ARTIFACTS / "space-signed-in.png"), full_page=True)
        context.close()
    finally:
        anonymous.close()


def test_a_hyperparameter_search_from_the_browser(page, app_url):
    """Fine-tune's search box: three short trials run as a child process; the trials table, the Optuna figures
    and the best trial show live, and the best run opens in Evaluate."""
    from playwright.sync_api import expect

    page.goto(app_url)  # a fresh page of the local app: the walks before left other choices (and a Space) open
    page.get_by_role("tab", name="Fine-tune").click()
    field = lambda name: page.locator(f"#ft-{name}").locator("textarea, input").first  # noqa: E731

    enter(field("model"), "minilm")
    open_hyperparameters(page)
    for name, value in (("max_steps", "6"), ("time_budget", "0"), ("train_samples", "120")):
        enter(field(name), value)
    page.get_by_text("Hyperparameter search (Optuna) instead of one run").click()
    expect(field("trials")).to_be_visible()
    # The one Start starts the search once its box is ticked, and says so.
    page.locator("#ft-search").get_by_label("Search instead of one run", exact=False).check()
    expect(page.get_by_role("button", name=re.compile("^Start"))).to_have_count(1)
    for name, value in (("trials", "3"), ("study", "browser-search")):
        enter(field(name), value)
    for name, value in (("max_steps", "6"), ("time_budget", "0"), ("train_samples", "120"), ("trials", "3")):
        expect(field(name)).to_have_value(value)  # nothing typed was undone by a late page event
    page.wait_for_timeout(500)  # let the last change reach the server before the click reads the form
    page.get_by_role("button", name="Start search").click()
    expect(page.get_by_text("Started search browser-search")).to_be_visible(timeout=60_000)
    expect(page.get_by_text("--trials 3", exact=False)).to_be_visible()  # the three trials asked for
    expect(page.get_by_text("search browser-search — completed: 3 of 3 trials finished", exact=False)).to_be_visible(
        timeout=300_000
    )
    table = page.locator("#ft-trials-table")
    expect(table).to_contain_text("(best)", timeout=30_000)
    for trial in range(3):
        expect(table).to_contain_text(f"browser-search-t00{trial}")
    expect(page.locator(".js-plotly-plot").first).to_be_visible()
    page.wait_for_timeout(1500)
    page.screenshot(path=str(ARTIFACTS / "search.png"), full_page=True)
    best = re.search(r"best: trial \d+ \((browser-search-t00\d)\)", page.locator("body").inner_text()).group(1)

    page.get_by_role("button", name="Evaluate this run").click()
    expect(page.get_by_role("tab", name="Evaluate", selected=True)).to_be_visible()
    expect(page.locator("#ev-run").locator("input").first).to_have_value(best)
