"""Exports of one device's samples, streamed row by row: CSV, and JSON-LD with the BattINFO/EMMO
terms of the wire definition (SOSA observations, one per cell quantity)."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, TextIO

from host.store.schema import CELL_COLUMNS
from soxcommon import ontology, wire

EPOCH_2000_UNIX_S = 946684800
HEADER = ("boot", "seq", "t_s", "t_ms", "time_relative", "current_mA", "cell", *CELL_COLUMNS)


def write_csv(rows: Iterable[tuple[Any, ...]], out: TextIO) -> int:
    writer = csv.writer(out)
    writer.writerow(HEADER)
    n = 0
    for row in rows:
        writer.writerow(row)
        n += 1
    return n


def result_time(t_s: int, t_ms: int, relative: int) -> str | None:
    if relative:
        return None  # board-relative: no wall time to state
    return datetime.fromtimestamp(EPOCH_2000_UNIX_S + t_s + t_ms / 1000, UTC).isoformat()


def context() -> dict[str, Any]:
    ctx: dict[str, Any] = dict(ontology.NAMESPACES)
    ctx.update({
        "hasNumericalPart": {"@id": "emmo:EMMO_8ef3cd6d_ae58_4a8d_9fc0_ad8f49015cd0"},
        "hasMeasurementUnit": {"@id": "emmo:EMMO_bed1d005_b04e_4a90_94cf_02bc678a8569", "@type": "@id"},
        "hasNumericalValue": {"@id": "emmo:EMMO_faf79f53_749d_40b2_807c_d34244c192f4"},
        "resultTime": {"@id": "sosa:resultTime", "@type": "xsd:dateTime"},
        "hasFeatureOfInterest": {"@id": "sosa:hasFeatureOfInterest", "@type": "@id"},
        "madeBySensor": {"@id": "sosa:madeBySensor", "@type": "@id"},
        "hasResult": {"@id": "sosa:hasResult"},
        "observedProperty": {"@id": "sosa:observedProperty", "@type": "@id"},
    })
    return ctx


def own_terms() -> list[dict[str, Any]]:
    return [{"@id": curie, "@type": "owl:Class", "rdfs:label": label, "rdfs:subClassOf": {"@id": parent}}
            for curie, label, parent in ontology.OWN_TERMS]


def _observation(device: str, cell_iri: str, key: str, curie: str, unit: str, value: int,
                 when: str | None) -> dict[str, Any]:
    unit_curie = ontology.UNITS[unit][0]
    obs: dict[str, Any] = {
        "@id": f"{key}",
        "@type": "sosa:Observation",
        "hasFeatureOfInterest": cell_iri,
        "madeBySensor": f"urn:soxbms:{device}:sensor:{key.rsplit(':', 1)[-1]}",
        "observedProperty": curie,
        "hasResult": {"@type": curie, "hasNumericalPart": {"@type": "emmo:Real", "hasNumericalValue": value},
                      "hasMeasurementUnit": unit_curie},
    }
    if when is not None:
        obs["resultTime"] = when
    return obs


def write_jsonld(device: str, rows: Iterable[tuple[Any, ...]], out: TextIO) -> int:
    """A JSON-LD document whose @graph is written one observation at a time."""
    out.write('{"@context": ' + json.dumps(context()) + ', "@graph": [\n')
    for term in own_terms():
        out.write(json.dumps(term) + ",\n")
    n = 0
    pack_iri = f"urn:soxbms:{device}"
    last_sample: tuple[int, int] | None = None
    for row in rows:
        boot, seq, t_s, t_ms, relative, current_mA, cell = row[:7]
        when = result_time(t_s, t_ms, relative)
        base = f"urn:soxbms:{device}:{boot}:{seq}"
        if (boot, seq) != last_sample:
            last_sample = (boot, seq)
            name, curie, unit = wire.PACK_QUANTITIES[0][1:4]
            out.write(json.dumps(_observation(device, pack_iri, f"{base}:{name}", curie, unit, current_mA, when))
                      + ",\n")
        cell_iri = f"urn:soxbms:{device}:cell:{cell}"
        for value, (_, column, curie, unit, _, _) in zip(row[7:], wire.CELL_QUANTITIES, strict=True):
            out.write(json.dumps(_observation(device, cell_iri, f"{base}:{cell}:{column}", curie, unit, value,
                                              when)) + ",\n")
        n += 1
    cells = {"@id": pack_iri, "@type": ontology.BATTERY_CELL, "rdfs:label": f"soxbms device {device}"}
    out.write(json.dumps(cells) + "\n]}\n")
    return n
