"""Exports of one device's samples, streamed row by row: CSV, and JSON-LD with the BattINFO/EMMO
terms of the wire definition (SOSA observations, one per cell quantity)."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, TextIO

from host.store.schema import CELL_COLUMNS, ESTIMATE_COLUMNS, SOS_COLUMNS
from soxcommon import ontology, wire

HEADER = ("boot", "seq", "t_s", "t_ms", "time_relative", "current_mA", "cell", *CELL_COLUMNS)
ESTIMATE_HEADER = (*SOS_COLUMNS, *ESTIMATE_COLUMNS)  # after HEADER in rows of SqlStore.samples(estimates=True)
# Checks of the whole pack (engine/safety.py reports them at cell 0): their findings are about the pack.
PACK_CHECKS = frozenset(wire.SOS_CHECKS.index(name) for name in ("charge_current_mA", "discharge_current_mA"))


def write_csv(rows: Iterable[tuple[Any, ...]], out: TextIO, estimates: bool = False) -> int:
    """rows as SqlStore.samples() gives them (with the estimate columns when `estimates`)."""
    writer = csv.writer(out)
    writer.writerow(HEADER + ESTIMATE_HEADER if estimates else HEADER)
    n = 0
    for row in rows:
        writer.writerow(row)
        n += 1
    return n


def result_time(t_s: int, t_ms: int, relative: int) -> str | None:
    """xsd:dateTime (UTC) of a synced sample; None for a board-relative one (no wall time to state)."""
    if relative:
        return None
    t = datetime.fromtimestamp(wire.EPOCH_2000_UNIX_S + t_s, UTC) + timedelta(milliseconds=t_ms)
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _iri(curie: str) -> str:
    return ontology.expand(curie)


def context() -> dict[str, Any]:
    """Inline JSON-LD context: the BattINFO namespaces and keys (same IRIs as the published context
    https://w3id.org/emmo/domain/battery/context) plus the SOSA terms; nothing is fetched."""
    ctx: dict[str, Any] = dict(ontology.NAMESPACES)
    ctx.update({
        "hasNumericalPart": {"@id": _iri(ontology.HAS_NUMERICAL_PART), "@type": "@id"},
        "hasMeasurementUnit": {"@id": _iri(ontology.HAS_MEASUREMENT_UNIT), "@type": "@id"},
        # hasNumberValue in EMMO; the BattINFO context names it hasNumericalValue too.
        "hasNumericalValue": {"@id": _iri(ontology.HAS_NUMBER_VALUE)},
        "resultTime": {"@id": _iri("sosa:resultTime"), "@type": "xsd:dateTime"},
        "hasFeatureOfInterest": {"@id": _iri("sosa:hasFeatureOfInterest"), "@type": "@id"},
        "madeBySensor": {"@id": _iri("sosa:madeBySensor"), "@type": "@id"},
        "hasResult": {"@id": _iri("sosa:hasResult")},
        "observedProperty": {"@id": _iri("sosa:observedProperty"), "@type": "@id"},
        "hasMetrologicalUncertainty": {"@id": _iri(ontology.HAS_METROLOGICAL_UNCERTAINTY)},
    })
    return ctx


def own_terms() -> list[dict[str, Any]]:
    """The soxbms: terms EMMO lacks, each a subclass of the nearest EMMO class."""
    return [{"@id": curie, "@type": "owl:Class", "skos:prefLabel": {"@value": label, "@language": "en"},
             "rdfs:comment": {"@value": comment, "@language": "en"}, "rdfs:subClassOf": {"@id": parent}}
            for curie, label, parent, comment in ontology.OWN_TERMS]


def numerical_value(value: int, unit: str) -> int | dict[str, str]:
    """The wire integer stated in the EMMO unit of ontology.UNITS[unit], exactly (xsd:decimal when scaled)."""
    exponent = ontology.UNITS[unit][1]
    if exponent == 0:
        return value
    return {"@value": format(Decimal(value).scaleb(exponent), "f"), "@type": "xsd:decimal"}


def _quantity(quantity: str, unit: str, value: int) -> dict[str, Any]:
    """A quantity valued as in the BattINFO context."""
    return {"@type": quantity,
            "hasNumericalPart": {"@type": ontology.REAL_DATA, "hasNumericalValue": numerical_value(value, unit)},
            "hasMeasurementUnit": ontology.UNITS[unit][0]}


def _observation(iri: str, feature: str, sensor: str, quantity: str, result: dict[str, Any],
                 when: str | None) -> dict[str, Any]:
    """One sosa:Observation of `quantity` with its result."""
    obs: dict[str, Any] = {
        "@id": iri,
        "@type": "sosa:Observation",
        "hasFeatureOfInterest": feature,
        "madeBySensor": sensor,
        "observedProperty": quantity,
        "hasResult": result,
    }
    if when is not None:
        obs["resultTime"] = when
    return obs


class _Graph:
    """Writes the nodes of the @graph array one at a time, comma-separated."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.empty = True

    def add(self, node: dict[str, Any]) -> None:
        self.out.write(("" if self.empty else ",\n") + json.dumps(node, separators=(",", ":")))
        self.empty = False


def write_jsonld(device: str, rows: Iterable[tuple[Any, ...]], out: TextIO, estimates: bool = False) -> int:
    """A JSON-LD document whose @graph is written one node at a time: our own terms, the pack
    (battery:Battery), each cell (battery:BatteryCell) and its sensors when first seen, and one
    sosa:Observation per pack quantity per sample and per cell quantity per cell reading. With `estimates`
    (rows of SqlStore.samples(estimates=True)) also the board's: per cell SoC (its 1-sigma as the
    SoC's MetrologicalUncertainty) and SoH, per sample the pack's state of safety and one
    soxbms:SafetyFinding per reason, made by the pack's estimator. Returns the number of cell readings (rows)."""
    out.write('{"@context": ' + json.dumps(context()) + ', "@graph": [\n')
    graph = _Graph(out)
    for term in own_terms():
        graph.add(term)
    pack = f"urn:soxbms:{device}"
    estimator = f"{pack}:estimator"
    graph.add({"@id": pack, "@type": ontology.BATTERY, "rdfs:label": f"soxbms device {device}"})
    for _, column, _, _, _, _ in wire.PACK_QUANTITIES:
        graph.add({"@id": f"{pack}:sensor:{column}", "@type": "sosa:Sensor"})
    if estimates:
        graph.add({"@id": estimator, "@type": "sosa:Sensor", "rdfs:label": "the board's estimators"})
    width = len(HEADER)
    cells_seen: set[Any] = set()
    last_sample: tuple[Any, Any] | None = None
    n = 0
    for row in rows:
        boot, seq, t_s, t_ms, relative = row[:5]
        pack_values, cell, cell_values = row[5:6], row[6], row[7:width]
        when = result_time(t_s, t_ms, relative)
        sample = f"{pack}:obs:{boot}:{seq}"
        if (boot, seq) != last_sample:
            last_sample = (boot, seq)
            for value, (_, column, curie, unit, _, _) in zip(pack_values, wire.PACK_QUANTITIES, strict=True):
                if value is None:
                    continue  # absent reading
                graph.add(_observation(f"{sample}:{column}", pack, f"{pack}:sensor:{column}", curie,
                                       _quantity(curie, unit, value), when))
            if estimates and row[width] is not None:
                for node in _safety(sample, pack, estimator, row[width], row[width + 1], when):
                    graph.add(node)
        cell_iri = f"{pack}:cell:{cell}"
        if cell not in cells_seen:
            cells_seen.add(cell)
            graph.add({"@id": cell_iri, "@type": ontology.BATTERY_CELL,
                       "rdfs:label": f"cell {cell} of soxbms device {device}"})
            for _, column, _, _, _, _ in wire.CELL_QUANTITIES:
                graph.add({"@id": f"{cell_iri}:sensor:{column}", "@type": "sosa:Sensor"})
        for value, (_, column, curie, unit, _, _) in zip(cell_values, wire.CELL_QUANTITIES, strict=True):
            if value is None:
                continue  # absent reading: no observation, rather than a made-up value
            graph.add(_observation(f"{sample}:cell:{cell}:{column}", cell_iri, f"{cell_iri}:sensor:{column}",
                                   curie, _quantity(curie, unit, value), when))
        if estimates:
            for node in _cell_estimates(f"{sample}:cell:{cell}", cell_iri, estimator, row[width + 2:], when):
                graph.add(node)
        n += 1
    out.write("\n]}\n")
    return n


def _cell_estimates(prefix: str, cell_iri: str, estimator: str, values: tuple[Any, ...],
                    when: str | None) -> Iterable[dict[str, Any]]:
    """SoC (with its sigma) and SoH of one cell at one sample, as far as the board estimated them."""
    soc, sigma, soh = values
    soc_q, sigma_q, soh_q = wire.ESTIMATE_QUANTITIES
    if soc is not None:
        result = _quantity(soc_q[2], soc_q[3], soc)
        if sigma is not None:
            result["hasMetrologicalUncertainty"] = _quantity(sigma_q[2], sigma_q[3], sigma)
        yield _observation(f"{prefix}:{soc_q[1]}", cell_iri, estimator, soc_q[2], result, when)
    if soh is not None:
        yield _observation(f"{prefix}:{soh_q[1]}", cell_iri, estimator, soh_q[2], _quantity(soh_q[2], soh_q[3], soh),
                           when)


def _safety(sample: str, pack: str, estimator: str, level: int, reasons: str,
            when: str | None) -> Iterable[dict[str, Any]]:
    """The pack's state of safety, and one finding per reason code (about its cell, or the pack for a pack check)."""
    _, column, curie, unit, _, _ = wire.SOS_LEVEL
    result = _quantity(curie, unit, level)
    result["rdfs:label"] = wire.SOS_LEVELS[level]
    yield _observation(f"{sample}:{column}", pack, estimator, curie, result, when)
    finding = wire.SOS_REASONS[2]
    for code in map(int, reasons.split()):
        check, cell, _ = wire.reason_parts(code)
        feature = pack if check in PACK_CHECKS else f"{pack}:cell:{cell}"
        yield _observation(f"{sample}:{wire.SOS_REASONS[1]}:{code}", feature, estimator, finding,
                           {"@type": finding, "skos:notation": code, "rdfs:label": wire.reason_text(code)}, when)
