"""Channels: one module per kind. Each composes a payload, then sends it.

A payload is composed once and recorded before sending, so a retry sends the very same
content. Adding a channel kind is one module, one test file and one line in ``CHANNELS``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Protocol

from digest.config import ChannelSettings
from digest.deliver import apprise_channel, discord, email, feed_files, slack, teams, webhook
from digest.deliver.base import ChannelContext, Composed, settings_fingerprint
from digest.deliver.outbox import Outbox
from digest.options import KindOptions


class Channel(Protocol):
    kind: str
    Options: ClassVar[type[KindOptions]]  # the kind's own keys, checked and typed

    @classmethod
    def create(cls, settings: ChannelSettings, context: ChannelContext) -> Channel: ...

    def compose(self, digest: Any) -> Composed: ...

    @staticmethod
    def outbox_files(payload: dict[str, Any]) -> dict[str, bytes]:
        """What ``send`` would deliver, as files named by suffix, for ``--outbox``."""

    def send(self, payload: dict[str, Any], *, parts_sent: int,
             on_part_sent: Callable[[int], None]) -> Mapping[str, tuple[bool, str]] | None:
        """Deliver; return the recipients refused while others accepted (email), if any.

        ``on_part_sent(n)`` records that part ``n`` was accepted, so that a run stopped
        midway resumes after it. A channel that sends a digest as one message may leave it
        out (email does): the digest is marked sent when this returns."""

    def close(self) -> None: ...


CHANNELS: dict[str, type[Channel]] = {
    email.EmailChannel.kind: email.EmailChannel,
    slack.SlackChannel.kind: slack.SlackChannel,
    feed_files.FeedFilesChannel.kind: feed_files.FeedFilesChannel,
    discord.DiscordChannel.kind: discord.DiscordChannel,
    teams.TeamsChannel.kind: teams.TeamsChannel,
    webhook.WebhookChannel.kind: webhook.WebhookChannel,
    apprise_channel.AppriseChannel.kind: apprise_channel.AppriseChannel,
}

__all__ = ["CHANNELS", "Channel", "ChannelContext", "Composed", "Outbox", "settings_fingerprint"]
