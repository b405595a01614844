"""The ontology terms of the wire and the JSON-LD export, checked against the pinned extract of the
EMMO / BattINFO / SOSA source files (host/ontology/pinned.ttl). No network: the extract is read from
the package and the export's context is inline; any attempt to connect fails the test."""

from __future__ import annotations

import io
import json
import socket
import threading
import urllib.request
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from importlib import resources
from typing import Any

import pytest
from rdflib import RDF, RDFS, Graph, Literal, Namespace, URIRef
from rdflib import namespace as rdf_ns
from rdflib.namespace import OWL, SKOS
from rdflib.term import Node

from host import export
from soxcommon import ontology, wire

SOSA = Namespace("http://www.w3.org/ns/sosa/")
XSD_INTEGER, XSD_DECIMAL, XSD_DATETIME = rdf_ns.XSD.integer, rdf_ns.XSD.decimal, rdf_ns.XSD.dateTime
OWN_NS = ontology.NAMESPACES["soxbms"]
PROPERTY_TYPES = (OWL.ObjectProperty, OWL.DatatypeProperty)
EMMO_HAS_UNIT = URIRef(ontology.expand(ontology.HAS_MEASUREMENT_UNIT))
EMMO_NUMERICAL_PART = URIRef(ontology.expand(ontology.HAS_NUMERICAL_PART))
EMMO_NUMBER_VALUE = URIRef(ontology.expand(ontology.HAS_NUMBER_VALUE))

# rdflib's own JSON-LD parser still builds a ConjunctiveGraph internally.
pytestmark = pytest.mark.filterwarnings("ignore:ConjunctiveGraph is deprecated:DeprecationWarning")


ESTIMATED = wire.ESTIMATE_QUANTITIES + (wire.SOS_LEVEL,)  # the board's estimates with a value and unit


def iri(curie_or_iri: str) -> URIRef:
    return URIRef(curie_or_iri if "://" in curie_or_iri else ontology.expand(curie_or_iri))


@pytest.fixture(scope="module")
def pinned() -> Graph:
    text = (resources.files("host") / "ontology" / "pinned.ttl").read_text(encoding="utf-8")
    return Graph().parse(data=text, format="turtle")


@pytest.fixture
def network_attempts(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Refuses, and records, every attempt to reach the network (DNS, sockets, urllib)."""
    attempts: list[Any] = []

    test_thread = threading.get_ident()

    def refuse(*args: Any, **kwargs: Any) -> Any:
        # Only this test's thread counts: a background thread left by another test (a client
        # reconnecting to its own loopback broker) is not rdflib reaching for the network.
        if threading.get_ident() == test_thread:
            attempts.append(args)
        raise OSError("network access attempted during an offline test")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    return attempts


def is_class(g: Graph, term: Node) -> bool:
    return (term, RDF.type, OWL.Class) in g


def is_property(g: Graph, term: Node) -> bool:
    return any((term, RDF.type, t) in g for t in PROPERTY_TYPES)


def superclasses(g: Graph, term: Node) -> set[Node]:
    """term and its named superclasses, transitively, as far as the pinned extract states them."""
    seen = {term}
    todo = [term]
    while todo:
        for parent in g.objects(todo.pop(), RDFS.subClassOf):
            if isinstance(parent, URIRef) and parent not in seen:
                seen.add(parent)
                todo.append(parent)
    return seen


def unit_restrictions(g: Graph, quantity: Node) -> set[Node]:
    """The classes a quantity (or a pinned superclass) requires its unit to belong to."""
    required: set[Node] = set()
    for cls in superclasses(g, quantity):
        for node in g.objects(cls, RDFS.subClassOf):
            if (node, OWL.onProperty, EMMO_HAS_UNIT) in g:
                required.update(o for o in g.objects(node, OWL.someValuesFrom) if isinstance(o, URIRef))
    return required


def own_terms() -> dict[str, tuple[str, str, str]]:
    return {curie: (label, parent, comment) for curie, label, parent, comment in ontology.OWN_TERMS}


def table_curies() -> list[str]:
    """Every term CURIE of the ontology table (upper-case string constants), units included."""
    return [v for k, v in vars(ontology).items() if k.isupper() and isinstance(v, str)]


# (a) the table against the pinned extract


def test_table_terms_are_pinned_or_own(pinned: Graph) -> None:
    curies = table_curies() + [q[2] for q in wire.CELL_QUANTITIES + wire.PACK_QUANTITIES + ESTIMATED]
    curies += [wire.SOS_REASONS[2]]
    curies += [unit for unit, _ in ontology.UNITS.values()]
    assert len(curies) > 20
    for curie in curies:
        if curie.startswith("soxbms:"):
            assert curie in own_terms(), f"{curie} is neither pinned nor declared in OWN_TERMS"
        else:
            term = iri(curie)
            assert is_class(pinned, term) or is_property(pinned, term), f"{curie} is not in pinned.ttl"


def test_own_terms_are_subclasses_of_pinned_classes(pinned: Graph) -> None:
    for curie, (label, parent, comment) in own_terms().items():
        assert iri(curie).startswith(OWN_NS)
        assert (iri(curie), None, None) not in pinned, f"{curie} must not pose as an EMMO term"
        assert is_class(pinned, iri(parent)), f"superclass {parent} of {curie} is not pinned"
        assert label == curie.split(":", 1)[1] and comment


def test_wire_units_exist_and_fit_the_quantity(pinned: Graph) -> None:
    for _, column, curie, unit, _, _ in wire.CELL_QUANTITIES + wire.PACK_QUANTITIES + ESTIMATED:
        unit_curie, exponent = ontology.UNITS[unit]
        assert isinstance(exponent, int) and -9 <= exponent <= 0
        assert is_class(pinned, iri(unit_curie)), f"{column}: unit {unit_curie} not pinned"
        quantity = iri(own_terms()[curie][1] if curie.startswith("soxbms:") else curie)
        unit_classes = superclasses(pinned, iri(unit_curie))
        for required in unit_restrictions(pinned, quantity):
            assert required in unit_classes, f"{column}: {unit_curie} is not a unit of {curie}"
    # The restriction check is not vacuous for the EMMO quantities of the wire.
    assert unit_restrictions(pinned, iri(ontology.ELECTRIC_CURRENT))
    assert unit_restrictions(pinned, iri(ontology.CELSIUS_TEMPERATURE))
    assert unit_restrictions(pinned, iri(ontology.PRESSURE))
    assert unit_restrictions(pinned, iri(ontology.WAVELENGTH))


def test_context_properties_are_pinned(pinned: Graph) -> None:
    ctx = export.context()
    terms = {k: v for k, v in ctx.items() if isinstance(v, dict)}
    assert {"hasNumericalPart", "hasMeasurementUnit", "hasNumericalValue", "resultTime",
            "hasFeatureOfInterest", "madeBySensor", "hasResult", "observedProperty"} <= set(terms)
    for key, definition in terms.items():
        assert is_property(pinned, iri(definition["@id"])), f"context term {key} is not a pinned property"
    for prefix, namespace in ontology.NAMESPACES.items():
        assert ctx[prefix] == namespace


def test_labels_match_pinned_preflabels(pinned: Graph) -> None:
    for curie, label in ontology.LABELS.items():
        labels = {str(o) for o in pinned.objects(iri(curie), SKOS.prefLabel)}
        assert labels == {label}, f"{curie}: table says {label!r}, pinned.ttl says {labels}"
    # every pinned (non-SOSA) term used by the table has its label stated in the table
    for curie in table_curies():
        if not curie.startswith("soxbms:") and any(pinned.objects(iri(curie), SKOS.prefLabel)):
            assert curie in ontology.LABELS, f"{curie} has no label in ontology.LABELS"


def test_pinned_extract_is_small_and_labelled(pinned: Graph) -> None:
    subjects = {s for s in pinned.subjects(RDF.type, None) if isinstance(s, URIRef)}
    assert 20 <= len(subjects) <= 60
    for s in subjects:
        assert any(pinned.objects(s, SKOS.prefLabel)) or any(pinned.objects(s, RDFS.label)), s


# (b) an export, parsed back


SAMPLES = (  # (boot, seq, t_s, t_ms, time_relative, current_mA)
    (3, 10, 790_000_000, 250, 0, -1500),
    (3, 11, 790_000_001, 0, 0, 2000),
    (4, 0, 12, 999, 1, 0),
)
CELLS = 2


def cell_values(sample: int, cell: int) -> tuple[int, ...]:
    """Distinct values per reading: voltage_mV, temp_dC, pressure_Pa, tof_ns, amplitude_bp, fbg_pm."""
    k = 10 * sample + cell
    return (3600 + k, -55 + k, 101_000 + k, 12_000 + k, 4_500 + k, 1_550_000 + k)


def export_rows() -> list[tuple[int, ...]]:
    return [(*head, cell, *cell_values(i, cell)) for i, head in enumerate(SAMPLES) for cell in range(CELLS)]


def value_in_unit(raw: int, unit: str) -> tuple[URIRef, Decimal]:
    unit_curie, exponent = ontology.UNITS[unit]
    return iri(unit_curie), Decimal(raw).scaleb(exponent)


@pytest.fixture
def exported(network_attempts: list[Any]) -> Graph:
    out = io.StringIO()
    assert export.write_jsonld("dev-1", export_rows(), out) == len(SAMPLES) * CELLS
    text = out.getvalue()
    doc = json.loads(text)
    assert isinstance(doc["@context"], dict), "the context must be inline"
    g = Graph().parse(data=text, format="json-ld")
    assert network_attempts == []
    return g


def test_export_observation_count(exported: Graph) -> None:
    observations = set(exported.subjects(RDF.type, SOSA.Observation))
    per_sample = len(wire.PACK_QUANTITIES) + CELLS * len(wire.CELL_QUANTITIES)
    assert per_sample == 13
    assert len(observations) == len(SAMPLES) * per_sample


def test_export_uses_only_pinned_or_own_terms(exported: Graph, pinned: Graph) -> None:
    def known_class(term: Any) -> bool:
        return isinstance(term, URIRef) and (is_class(pinned, term) or str(term).startswith(OWN_NS))

    for obs in exported.subjects(RDF.type, SOSA.Observation):
        quantities = list(exported.objects(obs, SOSA.observedProperty))
        results = list(exported.objects(obs, SOSA.hasResult))
        assert len(quantities) == 1 and len(results) == 1
        assert known_class(quantities[0]), quantities[0]
        result_types = list(exported.objects(results[0], RDF.type))
        assert result_types == quantities, "the result is an instance of the observed quantity"
        for part in exported.objects(results[0], EMMO_NUMERICAL_PART):
            assert all(known_class(t) for t in exported.objects(part, RDF.type))
    units = set(exported.objects(None, EMMO_HAS_UNIT))
    assert units and all(is_class(pinned, u) for u in units), units - {u for u in units if is_class(pinned, u)}
    # our own terms are published with the export, as subclasses of pinned classes
    for curie, (label, parent, _) in own_terms().items():
        assert (iri(curie), RDFS.subClassOf, iri(parent)) in exported
        assert (iri(curie), SKOS.prefLabel, Literal(label, lang="en")) in exported


def test_export_values_round_trip(exported: Graph) -> None:
    expected: Counter[tuple[Node | None, Node | None, Decimal]] = Counter()
    for i, sample in enumerate(SAMPLES):
        for _, _, curie, unit, _, _ in wire.PACK_QUANTITIES:
            expected[(iri(curie), *value_in_unit(sample[5], unit))] += 1
        for cell in range(CELLS):
            for value, (_, _, curie, unit, _, _) in zip(cell_values(i, cell), wire.CELL_QUANTITIES, strict=True):
                expected[(iri(curie), *value_in_unit(value, unit))] += 1
    found: Counter[tuple[Node | None, Node | None, Decimal]] = Counter()
    for obs in exported.subjects(RDF.type, SOSA.Observation):
        result = exported.value(obs, SOSA.hasResult)
        part = exported.value(result, EMMO_NUMERICAL_PART)
        literal = exported.value(part, EMMO_NUMBER_VALUE)
        assert isinstance(literal, Literal) and literal.datatype in (XSD_INTEGER, XSD_DECIMAL), literal
        unit_node = exported.value(result, EMMO_HAS_UNIT)
        found[(exported.value(obs, SOSA.observedProperty), unit_node, Decimal(str(literal.toPython())))] += 1
    assert found == expected


def test_export_result_time(exported: Graph) -> None:
    times: Counter[datetime | None] = Counter()
    for obs in exported.subjects(RDF.type, SOSA.Observation):
        literals = list(exported.objects(obs, SOSA.resultTime))
        assert len(literals) <= 1
        if literals:
            assert isinstance(literals[0], Literal) and literals[0].datatype == XSD_DATETIME
            when = literals[0].toPython()
            assert isinstance(when, datetime), f"not an xsd:dateTime: {literals[0]!r}"
            times[when] += 1
        else:
            times[None] += 1
    per_sample = len(wire.PACK_QUANTITIES) + CELLS * len(wire.CELL_QUANTITIES)
    expected: Counter[datetime | None] = Counter()
    for _, _, t_s, t_ms, relative, _ in SAMPLES:
        key = None if relative else (datetime.fromtimestamp(wire.EPOCH_2000_UNIX_S + t_s, UTC)
                                     + timedelta(milliseconds=t_ms))
        expected[key] += per_sample
    assert times == expected


def test_export_features_of_interest(exported: Graph, pinned: Graph) -> None:
    cell_quantities = {iri(q[2]) for q in wire.CELL_QUANTITIES}
    pack_quantities = {iri(q[2]) for q in wire.PACK_QUANTITIES}
    battery_cell, battery = iri(ontology.BATTERY_CELL), iri(ontology.BATTERY)
    cells: Counter[Node | None] = Counter()
    for obs in exported.subjects(RDF.type, SOSA.Observation):
        quantity = exported.value(obs, SOSA.observedProperty)
        feature = exported.value(obs, SOSA.hasFeatureOfInterest)
        types = set(exported.objects(feature, RDF.type))
        assert len(list(exported.objects(obs, SOSA.madeBySensor))) == 1
        if quantity in cell_quantities:
            assert any(battery_cell in superclasses(pinned, t) for t in types), f"{feature} is not a BatteryCell"
            cells[feature] += 1
        else:
            assert quantity in pack_quantities
            assert battery in types and battery_cell not in types, "the pack is a Battery, not a cell"
    assert sorted(cells.values()) == [len(SAMPLES) * len(wire.CELL_QUANTITIES)] * CELLS
    # BatteryCell is a Battery in the pinned extract, so the pack type is the right superclass
    assert battery in superclasses(pinned, battery_cell)


# (c) the board's estimates in an export


def estimate_rows() -> list[tuple[Any, ...]]:
    """export_rows() with the estimate columns: sample 0 at alarm with two reasons, cell 1 of sample 2 not estimated."""
    reasons = {0: f"{wire.reason(0, 1, 2)} {wire.reason(9, 0, 1)}", 1: "", 2: ""}
    rows = []
    for i, head in enumerate(SAMPLES):
        for cell in range(CELLS):
            estimate = (None, None, None) if (i, cell) == (2, 1) else (5000 + 10 * i + cell, 30 + cell, 9800 - i)
            rows.append((*head, cell, *cell_values(i, cell), 2 if i == 0 else 0, reasons[i], *estimate))
    return rows


@pytest.fixture
def exported_estimates(network_attempts: list[Any]) -> Graph:
    out = io.StringIO()
    assert export.write_jsonld("dev-1", estimate_rows(), out, estimates=True) == len(SAMPLES) * CELLS
    g = Graph().parse(data=out.getvalue(), format="json-ld")
    assert network_attempts == []
    return g


def test_export_of_estimates(exported_estimates: Graph, pinned: Graph) -> None:
    g = exported_estimates
    by_quantity: Counter[Node | None] = Counter(g.value(o, SOSA.observedProperty)
                                                for o in g.subjects(RDF.type, SOSA.Observation))
    soc, soh = iri(ontology.STATE_OF_CHARGE), iri(ontology.STATE_OF_HEALTH)
    sos, finding = iri(wire.SOS_LEVEL[2]), iri(wire.SOS_REASONS[2])
    assert (by_quantity[soc], by_quantity[soh]) == (len(SAMPLES) * CELLS - 1,) * 2  # one cell not estimated
    assert (by_quantity[sos], by_quantity[finding]) == (len(SAMPLES), 2)
    has_uncertainty = URIRef(ontology.expand(ontology.HAS_METROLOGICAL_UNCERTAINTY))
    assert is_property(pinned, has_uncertainty)
    sigmas = []
    for obs in g.subjects(SOSA.observedProperty, soc):
        uncertainty = g.value(g.value(obs, SOSA.hasResult), has_uncertainty)
        assert (uncertainty, RDF.type, iri(ontology.METROLOGICAL_UNCERTAINTY)) in g
        assert g.value(uncertainty, EMMO_HAS_UNIT) == iri(ontology.UNIT_ONE)
        sigmas.append(g.value(g.value(uncertainty, EMMO_NUMERICAL_PART), EMMO_NUMBER_VALUE).toPython())
    assert sorted(sigmas) == sorted([Decimal("0.0030"), Decimal("0.0031")] * 2 + [Decimal("0.0030")])
    # the own terms of the state of safety sit under pinned EMMO classes
    assert iri(ontology.ORDINAL_QUANTITY) in superclasses(g, sos)
    assert iri(ontology.NOMINAL_PROPERTY) in superclasses(g, finding)
    labels = {str(g.value(g.value(o, SOSA.hasResult), RDFS.label)): g.value(o, SOSA.hasFeatureOfInterest)
              for o in g.subjects(SOSA.observedProperty, finding)}
    assert labels == {"cell_voltage_high_mV cell 1 alarm": URIRef("urn:soxbms:dev-1:cell:1"),
                      "charge_current_mA cell 0 warn": URIRef("urn:soxbms:dev-1")}
