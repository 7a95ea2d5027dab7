"""MONAI transform checking that raw data were acquired with the protocol a network was trained for.

A network learns the aliasing of one protocol (sequence, trajectory, matrix): applied to another
it returns plausible-looking but wrong maps. Its weights' ``model.json`` records the training
protocol (``data.protocol``, :meth:`mrf_monai.acquisition.protocol.Protocol.to_dict`); this
transform compares it with the raw data's and refuses a mismatch with a message that says what
differs and how to fine-tune, unless the user explicitly allows it.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Hashable, Mapping
from typing import Any

from monai.transforms import MapTransform

from mrf_monai.acquisition.protocol import Protocol

__all__ = ["CheckProtocold", "PROTOCOL_MISMATCH_HINT"]

logger = logging.getLogger(__name__)

#: how to get weights for the user's protocol (docs/protocols.md).
PROTOCOL_MISMATCH_HINT = (
    "fine-tune the weights for this protocol (docs/protocols.md, 'Training for your protocol': "
    "python -m monai.bundle run training ... --protocol YOUR_RAW.h5 --init_from THESE_WEIGHTS) or set "
    "allow_protocol_mismatch=true (--option allow_protocol_mismatch=true) to run anyway"
)


class CheckProtocold(MapTransform):
    """Compare the protocol of ``data[raw_key]`` (a ``RawSubject``) with a network's training protocol.

    Args:
        protocol: the training protocol (a :class:`Protocol` or its ``to_dict()``), or ``None``
            for weights that record none (a warning, once).
        model_name: how messages name the network (e.g. ``"the MRF-IDDPM weights x/model.pt"``).
        raw_key: key of the ``RawSubject``.
        allow_mismatch: warn instead of raising.
        ignore: aspects not compared (:data:`mrf_monai.acquisition.protocol.PROTOCOL_ASPECTS`);
            by default the FOV (the trajectory in cycles per pixel and the matrix fix what the
            network sees) and the coil count (the condition is coil-combined).
    """

    def __init__(
        self,
        protocol: Protocol | Mapping[str, Any] | None,
        model_name: str = "the network",
        raw_key: str = "raw",
        allow_mismatch: bool = False,
        ignore: Collection[str] = ("fov", "coils"),
    ) -> None:
        super().__init__([raw_key])
        if protocol is not None and not isinstance(protocol, Protocol):
            protocol = Protocol.from_dict(dict(protocol))
        self.protocol = protocol
        self.model_name = model_name
        self.raw_key = raw_key
        self.allow_mismatch = bool(allow_mismatch)
        self.ignore = tuple(ignore)
        self._checked: dict[int, list[str]] = {}
        self._warned = False

    def differences(self, raw: Any) -> list[str]:
        """What differs between the raw data's protocol and the training protocol (raw value first)."""
        if self.protocol is None:
            return []
        key = id(raw)
        if key not in self._checked:  # the slices of one subject share its protocol
            self._checked = {key: Protocol.from_raw(raw).differences(self.protocol, self.ignore)}
        return self._checked[key]

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        if self.protocol is None:
            if not self._warned:
                logger.warning(
                    "%s record no training protocol; it cannot be checked against the raw data",
                    self.model_name,
                )
                self._warned = True
            return d
        raw = d[self.raw_key]
        diffs = self.differences(raw)
        if diffs:
            where = getattr(raw, "path", None) or "the raw data"
            message = (
                f"{self.model_name} were trained for {self.protocol.summary()}; "
                f"{where} differ in: {', '.join(diffs)} (raw data vs training)"
            )
            if not self.allow_mismatch:
                raise ValueError(f"{message}; {PROTOCOL_MISMATCH_HINT}")
            if not self._warned:
                logger.warning("%s; running anyway (allow_protocol_mismatch)", message)
                self._warned = True
        return d
