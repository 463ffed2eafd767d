"""What each event's payload must hold where the handlers read it, checked before they run.

GitHub signs what it sends, but a signature says who sent a delivery, not that it is shaped as
documented. Unchecked, a wrong type failed deep inside a handler — retried as if GitHub were down,
or written to the store as it came (a label named ``True``, a repository renamed to ``x``).
Checked here, such a delivery fails for good at once, its field named. Fields the handlers do not
read are left alone, so GitHub adding or changing them never fails a delivery.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from bot.jobs import MAX_ACTION
from training.records import is_repository_name


def _repository_name(value: str) -> str:
    if not is_repository_name(value):
        raise ValueError("expected OWNER/NAME")
    return value


RepositoryName = Annotated[str, AfterValidator(_repository_name)]


class _Shape(BaseModel):
    # strict: GitHub's ids are numbers and its names strings; "7" or true is not what it sends
    model_config = ConfigDict(extra="allow", strict=True)


NodeId = Annotated[str, Field(max_length=100)]  # the widths below are the store's columns'
Login = Annotated[str, Field(max_length=200)]


class RepositoryRef(_Shape):
    full_name: RepositoryName
    id: int | None = None
    node_id: NodeId | None = None


class RepositoryShape(RepositoryRef):
    default_branch: str | None = None


class AccountShape(_Shape):
    login: Login | None = None


class InstallationShape(_Shape):
    id: int
    account: AccountShape | None = None


class SenderShape(_Shape):
    login: Login | None = None
    type: Annotated[str, Field(max_length=20)] | None = None


class LabelShape(_Shape):
    name: str = Field(min_length=1, max_length=200)
    id: int | None = None
    node_id: NodeId | None = None
    color: Annotated[str, Field(max_length=12)] | None = None
    description: str | None = None


class IssueShape(_Shape):
    """The fields read outside ``training.records.parse_issue``, which checks the rest."""

    number: int
    title: str
    body: str | None = None
    labels: list[LabelShape] = Field(default_factory=list)


class FromShape(_Shape):
    from_: str | None = Field(default=None, alias="from")


class ChangesShape(_Shape):
    name: FromShape | None = None  # a label renamed
    new_repository: RepositoryRef | None = None  # an issue transferred
    new_issue: dict[str, Any] | None = None


class CommitShape(_Shape):
    added: list[str] = Field(default_factory=list)
    modified: list[str] = Field(default_factory=list)
    removed: list[str] = Field(default_factory=list)


class _Delivery(_Shape):
    action: str | None = Field(default=None, max_length=MAX_ACTION)
    sender: SenderShape | None = None
    installation: InstallationShape | None = None


class _RepositoryDelivery(_Delivery):
    repository: RepositoryShape


class IssuesDelivery(_RepositoryDelivery):
    issue: IssueShape
    label: LabelShape | None = None
    changes: ChangesShape | None = None


class LabelDelivery(_RepositoryDelivery):
    label: LabelShape
    changes: ChangesShape | None = None


class PushDelivery(_RepositoryDelivery):
    ref: str | None = None
    commits: list[CommitShape] | None = None


class RepositoryDelivery(_RepositoryDelivery):
    pass


class InstallationDelivery(_Delivery):
    installation: InstallationShape
    repositories: list[RepositoryRef] | None = None


class InstallationRepositoriesDelivery(_Delivery):
    installation: InstallationShape
    repositories_added: list[RepositoryRef] | None = None
    repositories_removed: list[RepositoryRef] | None = None


SHAPES: dict[str, type[_Shape]] = {
    "issues": IssuesDelivery,
    "label": LabelDelivery,
    "push": PushDelivery,
    "repository": RepositoryDelivery,
    "installation": InstallationDelivery,
    "installation_repositories": InstallationRepositoriesDelivery,
}


class MalformedPayload(ValueError):
    """A delivery whose payload is not shaped as its event's handler reads it."""


def check_shape(event: str, payload: dict[str, Any]) -> None:
    """Raise ``MalformedPayload`` naming every wrong field; events without a shape pass."""
    shape = SHAPES.get(event)
    if shape is None:
        return
    try:
        shape.model_validate(payload)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}" for error in exc.errors()
        )
        raise MalformedPayload(f"malformed {event} payload: {problems}") from None
