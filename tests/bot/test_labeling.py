"""New issues get labels from the bundle in service, as the policy and the repository config say."""

from __future__ import annotations

from tests.bot.conftest import BotUnderTest
from tests.bot.helpers import wait_for


def test_opened_issue_is_labeled_through_the_app_installation(bot: BotUnderTest) -> None:
    issue = bot.open_issue()
    response = bot.send_issue("opened", issue, delivery_id="d-open-1")
    assert response.status_code == 202
    wait_for(lambda: bot.job_status("d-open-1") == "done", what="the job")
    # bug and documentation pass their thresholds; enhancement does not; question is unreliable
    assert bot.labels_on(issue["number"]) == ["bug", "documentation"]
    label_posts = bot.fake.requests_to(
        rf"/repos/{bot.repo.full_name}/issues/{issue['number']}/labels",
        "POST",
    )
    assert len(label_posts) == 1
    assert label_posts[0].headers["authorization"].startswith("token ghs_fake")  # an installation token
    assert not bot.fake.comments
