"""Labels that issue templates apply by themselves."""

from training.issue_templates import template_labels


def test_issue_form_labels_list() -> None:
    form = "name: Bug Report\ndescription: Create a report\nlabels: ['Bug', 'Needs Triage']\nbody: []\n"
    assert template_labels(".github/ISSUE_TEMPLATE/bug_report.yml", form) == ["Bug", "Needs Triage"]


def test_markdown_front_matter_comma_string() -> None:
    text = "---\nname: Feature\nabout: Suggest\nlabels: enhancement, needs review\n---\n\n### Describe\n"
    assert template_labels(".github/ISSUE_TEMPLATE/feature.md", text) == ["enhancement", "needs review"]


def test_config_and_invalid_files_apply_nothing() -> None:
    assert template_labels(".github/ISSUE_TEMPLATE/config.yml", "blank_issues_enabled: false\n") == []
    assert template_labels(".github/ISSUE_TEMPLATE/x.yml", "labels: [unclosed\n") == []
    assert template_labels(".github/ISSUE_TEMPLATE/plain.md", "no front matter\nlabels: bug\n") == []
    assert template_labels(".github/ISSUE_TEMPLATE/notes.txt", "labels: bug") == []
