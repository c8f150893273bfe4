"""The admin through Django's test client: what each kind of user may see and do, the JSON
behind the live refresh, the start form's validation, and the actions' record of who acted.
(tests/test_admin_browser.py drives the same pages in a real browser.)"""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse

from backfills import control, run_backfill
from backfills.engine.ledger import History, Ledger
from backfills.models import (
    BackfillAction,
    BackfillRun,
    BackfillSample,
    QuarantinedRow,
)
from blog.models import Post
from tests.testapp.models import Item

pytestmark = pytest.mark.django_db(transaction=True)

SEO = "blog.refresh_seo_descriptions"
COUNT = "testapp.count_items"


def user(name: str, *permissions: str, staff: bool = True) -> Client:
    """A logged-in client for a staff user with *permissions* (codenames of backfills')."""
    account = User.objects.create_user(name, password="pw", is_staff=staff)
    account.user_permissions.add(
        *Permission.objects.filter(content_type__app_label="backfills", codename__in=permissions)
    )
    client = Client()
    client.force_login(account)
    return client


def viewer() -> Client:
    return user("viewer", "view_backfillrun")


def operator() -> Client:
    return user(
        "operator",
        "view_backfillrun",
        "control_backfillrun",
        "tune_backfillrun",
        "start_backfillrun",
        "retry_quarantinedrow",
    )


def seed_posts(count: int = 40) -> None:
    Post.objects.bulk_create([Post(title=f"Post {i}", body="body " * 5) for i in range(count)])


def open_parallel_run(seed: bool = True) -> BackfillRun:
    """A parallel run of the SEO backfill, running with nobody draining it yet."""
    if seed:
        seed_posts()
    result = control.start(SEO, workers=1, enqueue=False, by="setup")
    return BackfillRun.objects.get(pk=result.run.pk)


def run_url(run: BackfillRun, action: str = "change") -> str:
    if action == "change":
        return reverse("admin:backfills_backfillrun_change", args=[run.pk])
    return reverse(f"admin:backfills_run_{action}", args=[run.pk])


# -- who may see -------------------------------------------------------------------------------


def to_login(response: Any) -> bool:
    return response.status_code == 302 and "/admin/login/" in response["Location"]


def test_anonymous_users_are_sent_to_the_login_page() -> None:
    run = open_parallel_run()
    for url in ["/admin/backfills/", run_url(run), run_url(run, "live")]:
        assert to_login(Client().get(url)), url
    before = BackfillRun.objects.get(pk=run.pk)
    # Every action, each with what would make it act had the user been allowed.
    posts = {
        run_url(run, "pause"): {},
        run_url(run, "cancel"): {},
        run_url(run, "settings"): {"batch_size": "5", "sleep": "2", "profile": "fast"},
        run_url(run, "retry"): {},
        reverse("admin:backfills_start", args=[COUNT]): {"workers": "1", "start": "1"},
    }
    for url, data in posts.items():
        assert to_login(Client().post(url, data)), url
    control.pause(SEO, by="setup")  # so that a resume would change it
    assert to_login(Client().post(run_url(run, "resume"))), "resume"
    after = BackfillRun.objects.get(pk=run.pk)
    assert after.state == "paused"
    assert (after.batch_size, after.sleep, after.profile) == (
        before.batch_size,
        before.sleep,
        before.profile,
    )
    assert list(BackfillRun.objects.values_list("pk", flat=True)) == [run.pk]
    assert set(BackfillAction.objects.values_list("by", flat=True)) == {"setup"}


def test_the_overview_lists_every_backfill_with_its_latest_run() -> None:
    run = open_parallel_run()
    page = viewer().get("/admin/backfills/").content.decode()
    assert 'id="bf-overview"' in page
    assert f'data-backfill="{SEO}"' in page and f'data-backfill="{COUNT}"' in page
    assert f"run #{run.pk}" in page
    assert "never run" in page  # count_items has no run
    assert "bf-start-link" not in page  # a viewer may not start


def test_the_overview_filters_by_state_and_searches_by_name() -> None:
    open_parallel_run()
    client = viewer()
    page = client.get("/admin/backfills/", {"state": "never run"}).content.decode()
    assert f'data-backfill="{COUNT}"' in page and f'data-backfill="{SEO}"' not in page
    page = client.get("/admin/backfills/", {"q": "seo"}).content.decode()
    assert f'data-backfill="{SEO}"' in page and f'data-backfill="{COUNT}"' not in page


def test_the_live_json_carries_each_figure_the_pages_refresh() -> None:
    run = open_parallel_run()
    client = viewer()
    data = client.get(run_url(run, "live")).json()
    assert data["run"]["id"] == run.pk
    assert data["run"]["state"] == "interrupted"  # running, but no worker is alive
    assert data["run"]["rows"].startswith("0 of 40")
    assert data["charts"]["throughput"].startswith("<svg")
    overview = client.get(reverse("admin:backfills_overview_live")).json()["backfills"]
    by_name = {row["name"]: row for row in overview}
    assert by_name[SEO]["run"]["id"] == run.pk and by_name[COUNT]["run"] is None


def test_a_viewer_sees_the_run_but_no_controls_and_may_not_act() -> None:
    run = open_parallel_run()
    client = viewer()
    page = client.get(run_url(run)).content.decode()
    assert 'id="bf-run"' in page and 'id="bf-progress"' in page
    for form in ["bf-pause", "bf-resume", "bf-cancel", "bf-settings", "bf-start-link"]:
        assert form not in page, form
    for action in ["pause", "resume", "cancel", "settings", "retry"]:
        assert client.post(run_url(run, action), {"batch_size": 5}).status_code == 403, action
    assert client.get(reverse("admin:backfills_start", args=[SEO])).status_code == 403
    fresh = BackfillRun.objects.get(pk=run.pk)
    assert fresh.state == "running" and fresh.batch_size != 5
    assert not BackfillAction.objects.filter(by="viewer").exists()


START_SEO = {"latency_ms": "0", "workers": "1", "start": "1"}
CONTROLS = ["bf-pause", "bf-resume", "bf-cancel"]


def test_control_without_tune_or_start_may_pause_resume_and_cancel_only() -> None:
    seed_posts()
    client = user("controller", "view_backfillrun", "control_backfillrun")
    assert client.get(reverse("admin:backfills_start", args=[SEO])).status_code == 403
    assert start(client, START_SEO).status_code == 403
    assert not BackfillRun.objects.exists()
    run = open_parallel_run(seed=False)
    page = client.get(run_url(run)).content.decode()
    assert 'id="bf-cancel"' in page
    assert 'id="bf-settings"' not in page and "bf-start-link" not in page
    settings = {"batch_size": "5", "sleep": "2", "profile": "fast", "max_duty": "0.5"}
    assert client.post(run_url(run, "settings"), settings).status_code == 403
    assert client.post(run_url(run, "retry")).status_code == 403
    fresh = BackfillRun.objects.get(pk=run.pk)
    assert (fresh.batch_size, fresh.sleep, fresh.profile, fresh.max_duty) == (
        run.batch_size,
        run.sleep,
        run.profile,
        run.max_duty,
    )
    assert client.post(run_url(run, "pause")).status_code == 302
    assert BackfillRun.objects.get(pk=run.pk).state == "paused"
    assert client.post(run_url(run, "resume")).status_code == 302
    assert BackfillRun.objects.get(pk=run.pk).state == "running"
    assert client.post(run_url(run, "cancel")).status_code == 302
    assert BackfillRun.objects.get(pk=run.pk).state == "cancelled"
    actions = BackfillAction.objects.filter(by="controller").order_by("id")
    assert list(actions.values_list("action", flat=True)) == ["pause", "resume", "cancel"]


def test_tune_without_control_or_start_may_change_settings_only() -> None:
    seed_posts()
    client = user("tuner", "view_backfillrun", "tune_backfillrun")
    assert start(client, START_SEO).status_code == 403
    assert not BackfillRun.objects.exists()
    run = open_parallel_run(seed=False)
    page = client.get(run_url(run)).content.decode()
    assert 'id="bf-settings"' in page and "bf-start-link" not in page
    for form in CONTROLS:
        assert form not in page, form
    assert client.get(run_url(run, "cancel")).status_code == 403  # the confirmation page
    for action in ["pause", "cancel", "retry"]:
        assert client.post(run_url(run, action)).status_code == 403, action
    assert BackfillRun.objects.get(pk=run.pk).state == "running"
    control.pause(SEO, by="setup")
    assert client.post(run_url(run, "resume")).status_code == 403
    assert BackfillRun.objects.get(pk=run.pk).state == "paused"
    response = client.post(run_url(run, "settings"), {"batch_size": "5", "max_duty": "0.5"})
    assert response.status_code == 302
    fresh = BackfillRun.objects.get(pk=run.pk)
    assert (fresh.batch_size, fresh.max_duty) == (5, 0.5)
    actions = BackfillAction.objects.filter(by="tuner")
    assert list(actions.values_list("action", flat=True)) == ["set"]


def test_start_without_control_or_tune_may_start_only() -> None:
    seed_posts()
    client = user("starter", "view_backfillrun", "start_backfillrun")
    assert client.get(reverse("admin:backfills_start", args=[SEO])).status_code == 200
    assert start(client, START_SEO).status_code == 302
    run = BackfillRun.objects.get(name=SEO)
    assert run.state == "running" and run.started_by == "starter"
    page = client.get(run_url(run)).content.decode()
    assert 'id="bf-settings"' not in page
    for form in CONTROLS:
        assert form not in page, form
    for action in ["pause", "cancel", "retry"]:
        assert client.post(run_url(run, action)).status_code == 403, action
    assert client.post(run_url(run, "settings"), {"batch_size": "5"}).status_code == 403
    assert BackfillRun.objects.get(pk=run.pk).state == "running"
    control.pause(SEO, by="setup")
    assert client.post(run_url(run, "resume")).status_code == 403
    fresh = BackfillRun.objects.get(pk=run.pk)
    assert fresh.state == "paused" and fresh.batch_size != 5
    actions = BackfillAction.objects.filter(by="starter")
    assert list(actions.values_list("action", flat=True)) == ["start"]


def test_staff_without_view_permission_see_nothing() -> None:
    run = open_parallel_run()
    client = user("nobody")
    assert client.get(run_url(run)).status_code == 403
    assert client.get(run_url(run, "live")).status_code == 403
    assert 'id="bf-overview"' not in client.get("/admin/backfills/").content.decode()


# -- actions -----------------------------------------------------------------------------------


def test_pause_resume_and_cancel_are_recorded_with_the_user() -> None:
    run = open_parallel_run()
    client = operator()
    page = client.get(run_url(run)).content.decode()
    assert 'id="bf-pause"' in page or 'id="bf-resume"' in page  # interrupted: resume offered
    assert client.post(run_url(run, "pause")).status_code == 302
    assert BackfillRun.objects.get(pk=run.pk).state == "paused"
    assert 'id="bf-resume"' in client.get(run_url(run)).content.decode()
    assert client.post(run_url(run, "resume")).status_code == 302
    assert BackfillRun.objects.get(pk=run.pk).state == "running"
    # GET on the cancel url is the confirmation page; only its POST cancels.
    confirm = client.get(run_url(run, "cancel"))
    assert 'id="bf-cancel-confirm"' in confirm.content.decode()
    assert BackfillRun.objects.get(pk=run.pk).state == "running"
    client.post(run_url(run, "cancel"))
    assert BackfillRun.objects.get(pk=run.pk).state == "cancelled"
    actions = list(
        BackfillAction.objects.filter(run=run).order_by("id").values_list("action", "by", "via")
    )
    assert actions == [
        ("start", "setup", "code"),
        ("pause", "operator", "admin"),
        ("resume", "operator", "admin"),
        ("cancel", "operator", "admin"),
    ]
    log = client.get(run_url(run)).content.decode()
    assert log.count("operator") >= 3


def test_actions_are_posts_with_csrf_protection() -> None:
    run = open_parallel_run()
    account = User.objects.create_superuser("root", password="pw")
    client = Client(enforce_csrf_checks=True)
    client.force_login(account)
    assert client.post(run_url(run, "pause")).status_code == 403  # no CSRF token
    assert client.get(run_url(run, "pause")).status_code == 403  # not a POST
    assert BackfillRun.objects.get(pk=run.pk).state == "running"
    page = client.get(run_url(run)).content.decode()
    token = page.split('name="csrfmiddlewaretoken" value="')[1].split('"')[0]
    assert client.post(run_url(run, "pause"), {"csrfmiddlewaretoken": token}).status_code == 302
    assert BackfillRun.objects.get(pk=run.pk).state == "paused"


def test_settings_change_through_the_control_api() -> None:
    run = open_parallel_run()
    client = operator()
    client.post(run_url(run, "settings"), {"batch_size": "250", "sleep": "0.5"})
    fresh = BackfillRun.objects.get(pk=run.pk)
    assert (fresh.batch_size, fresh.sleep) == (250, 0.5)
    action = BackfillAction.objects.get(run=run, action="set")
    assert action.by == "operator" and "batch_size=250" in action.message
    # A bad value is refused with a message; nothing changes.
    response = client.post(run_url(run, "settings"), {"batch_size": "-3"}, follow=True)
    assert "Settings not changed" in response.content.decode()
    assert BackfillRun.objects.get(pk=run.pk).batch_size == 250


def test_clearing_the_batch_size_returns_the_run_to_adaptive_sizing() -> None:
    run = open_parallel_run()
    client = operator()
    client.post(run_url(run, "settings"), {"batch_size": "250"})
    fixed = BackfillRun.objects.get(pk=run.pk)
    assert fixed.batch_size == 250
    # The form as the page shows it, its batch size cleared and the rest left as prefilled.
    form = client.get(run_url(run)).context["settings_form"]
    data = {name: "" if form[name].value() is None else form[name].value() for name in form.fields}
    assert data["batch_size"] == 250
    data["batch_size"] = ""
    page = client.post(run_url(run, "settings"), data, follow=True).content.decode()
    assert "Nothing to change" not in page
    fresh = BackfillRun.objects.get(pk=run.pk)
    assert fresh.batch_size is None
    assert (fresh.target_chunk_time, fresh.sleep, fresh.profile, fresh.max_duty) == (
        fixed.target_chunk_time,
        fixed.sleep,
        fixed.profile,
        fixed.max_duty,
    )
    action = BackfillAction.objects.filter(run=run, action="set").latest("id")
    assert action.message.endswith("batch_size=adaptive (used when the run resumes).")
    # Already adaptive: an empty batch size changes nothing, and nothing is recorded.
    page = client.post(run_url(run, "settings"), data, follow=True).content.decode()
    assert "Nothing to change" in page
    assert BackfillAction.objects.filter(run=run, action="set").count() == 2


def test_retry_quarantined_rows_from_the_run_page() -> None:
    Item.objects.bulk_create([Item(note="boom" if i == 3 else "") for i in range(6)])
    result = run_backfill("testapp.quarantine_step_items")
    run = BackfillRun.objects.get(pk=result.run.pk)
    assert QuarantinedRow.objects.filter(run=run, resolved_at__isnull=True).count() == 1
    client = operator()
    page = client.get(run_url(run)).content.decode()
    assert 'id="bf-quarantined"' in page and 'id="bf-retry"' in page
    Item.objects.filter(note="boom").update(note="")  # the cause, fixed
    client.post(run_url(run, "retry"))
    assert QuarantinedRow.objects.filter(run=run, resolved_at__isnull=True).count() == 0
    assert BackfillAction.objects.filter(action="retry", by="operator").exists()


def test_a_failed_run_shows_its_traceback() -> None:
    Item.objects.bulk_create([Item(note="boom" if i == 5 else "") for i in range(10)])
    with pytest.raises(Exception, match="note is 'boom'"):
        run_backfill(COUNT, batch_size=3)
    run = BackfillRun.objects.get(name=COUNT)
    page = viewer().get(run_url(run)).content.decode()
    assert 'id="bf-traceback"' in page and "Traceback (most recent call last)" in page
    assert "note is &#x27;boom&#x27;" in page  # escaped


# -- start -------------------------------------------------------------------------------------


def start(client: Client, data: dict[str, Any], name: str = SEO) -> Any:
    return client.post(reverse("admin:backfills_start", args=[name]), data)


def test_a_bad_parameter_is_a_form_error_and_nothing_starts() -> None:
    seed_posts()
    client = operator()
    response = start(client, {"latency_ms": "fast", "workers": "1", "start": "1"})
    assert response.status_code == 200
    assert "Enter a number." in response.content.decode()
    response = start(client, {"latency_ms": "1", "workers": "0", "start": "1"})
    assert "greater than or equal to 1" in response.content.decode()
    assert not BackfillRun.objects.exists()


def test_the_preview_is_a_dry_run_that_changes_nothing() -> None:
    seed_posts()
    response = start(operator(), {"latency_ms": "0", "workers": "1", "preview": "1"})
    page = response.content.decode()
    assert 'id="bf-preview"' in page and "seo_description" in page
    assert "40 rows to walk" in page
    assert not BackfillRun.objects.exists()
    assert not Post.objects.exclude(seo_description="").exists()


def test_start_opens_a_parallel_run_and_enqueues_its_workers() -> None:
    from django_tasks_db.models import DBTaskResult

    seed_posts()
    response = start(operator(), {"latency_ms": "0.5", "workers": "1", "start": "1"})
    run = BackfillRun.objects.get(name=SEO)
    assert response.status_code == 302 and response["Location"] == run_url(run)
    assert run.parallel and run.state == "running" and run.parameters == {"latency_ms": 0.5}
    assert run.started_by == "operator"
    assert DBTaskResult.objects.count() == 1
    assert BackfillAction.objects.get(run=run, action="start").via == "admin"


def test_without_a_task_backend_the_start_page_gives_the_command(settings: Any) -> None:
    settings.TASKS = {"default": {"BACKEND": "django_tasks.backends.immediate.ImmediateBackend"}}
    seed_posts()
    response = start(operator(), {"latency_ms": "2", "workers": "1", "start": "1"})
    page = response.content.decode()
    assert 'id="bf-start-command"' in page
    assert f"python manage.py backfill run {SEO} --param latency_ms=2.0 --workers 1" in page
    assert 'name="start"' not in page
    assert not BackfillRun.objects.exists()


# -- history -----------------------------------------------------------------------------------


def test_a_run_records_a_bounded_history(settings: Any) -> None:
    settings.BACKFILLS = {**settings.BACKFILLS, "HISTORY_SECONDS": 0, "HISTORY_SAMPLES": 8}
    Item.objects.bulk_create([Item() for _ in range(200)])
    run_backfill(COUNT, batch_size=5)  # 40 chunks, a sample offered after each
    run = BackfillRun.objects.get(name=COUNT)
    samples = list(BackfillSample.objects.filter(run=run).order_by("at", "id"))
    assert 2 <= len(samples) <= 8
    assert samples[-1].rows_scanned == 200 and samples[-1].chunks_done == run.chunks_done
    scanned = [s.rows_scanned for s in samples]
    assert scanned == sorted(scanned)


def test_a_parallel_run_s_samples_carry_its_shared_health_verdict() -> None:
    from backfills.engine.ledger import Partitions

    run = open_parallel_run()
    ledger = Ledger("default", 60)
    Partitions(ledger).record_health(run, "replica lag 3.0 s")
    assert run.throttle_reason == ""  # this worker's copy of the row does not know it
    assert History(ledger, every=0, keep=10).offer(run, force=True)
    sample = BackfillSample.objects.get(run=run)
    assert sample.throttle_reason == "replica lag 3.0 s"


def test_thinning_keeps_the_ends_and_the_slowest_chunk() -> None:
    Item.objects.bulk_create([Item() for _ in range(3)])
    run_backfill(COUNT)
    run = BackfillRun.objects.get(name=COUNT)
    BackfillSample.objects.filter(run=run).delete()
    slow = [0.1, 0.2, 0.9, 0.3, 0.4, 0.8, 0.6]
    for i, seconds in enumerate(slow):
        BackfillSample.objects.create(
            run=run, rows_scanned=i * 10, chunks_done=i, max_chunk_seconds=seconds
        )
    dropped = History(Ledger("default", 60), every=0, keep=4).thin(run.pk)
    kept = list(BackfillSample.objects.filter(run=run).order_by("at", "id"))
    assert dropped == 3
    assert [s.rows_scanned for s in kept] == [0, 20, 40, 60]
    # The kept samples keep their slowest chunks (0.9 s) and take the dropped ones' when
    # slower: the 0.8 s chunk of the dropped sixth sample moves into the last.
    assert [s.max_chunk_seconds for s in kept] == [0.1, 0.9, 0.4, 0.8]


def test_only_finished_runs_can_be_deleted() -> None:
    run = open_parallel_run()
    account = User.objects.create_superuser("root", password="pw")
    client = Client()
    client.force_login(account)
    delete = reverse("admin:backfills_backfillrun_delete", args=[run.pk])
    assert client.get(delete).status_code == 403  # running: its checkpoint
    BackfillRun.objects.filter(pk=run.pk).update(state="failed")
    assert client.get(delete).status_code == 403  # failed: resumable
    BackfillRun.objects.filter(pk=run.pk).update(state="cancelled", active_key=None)
    assert client.post(delete, {"post": "yes"}).status_code == 302
    assert not BackfillRun.objects.filter(pk=run.pk).exists()
    # The actions log outlives the run.
    assert BackfillAction.objects.filter(name=SEO, action="start", run__isnull=True).exists()


def test_control_start_refuses_before_opening_a_run_without_a_task_backend(settings: Any) -> None:
    from backfills.exceptions import BackfillConfigurationError

    settings.TASKS = {"default": {"BACKEND": "django_tasks.backends.dummy.DummyBackend"}}
    seed_posts()
    with pytest.raises(BackfillConfigurationError, match="does not run tasks in a worker"):
        control.start(SEO, workers=1)
    assert not BackfillRun.objects.exists()
