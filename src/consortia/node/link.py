"""The node's keep-alive connection to the hub (moved to :mod:`consortia.transport.link`)."""

from consortia.transport.link import EXPECT_CONTINUE_MIN, Answer, HubLink

__all__ = ["EXPECT_CONTINUE_MIN", "Answer", "HubLink"]
