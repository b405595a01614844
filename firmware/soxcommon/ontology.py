# Ontology terms of the wire and the exports, host side (MicroPython and CPython subset); the board
# imports only the quantities' CURIEs (soxcommon/terms.py, re-exported here).
# Namespaces as in the BattINFO JSON-LD context https://w3id.org/emmo/domain/battery/context.
#
# Every EMMO / BattINFO / SOSA term below was checked against the source ontology files; the
# host keeps an extract of those files (host/ontology/pinned.ttl, provenance in
# host/ontology/README.md) and tests/host/test_ontology.py checks this table against it.
# Pinned versions: EMMO 1.0.1 (prefixed SI units from 1.0.2), domain-electrochemistry 0.37.2,
# domain-battery 0.18.7, SOSA (W3C/OGC).

# Quantities (classes): soxcommon/terms.py, re-exported here; the skos:prefLabel of each is in LABELS.
from soxcommon.terms import (
    ACOUSTIC_QUANTITY,
    CELL_VOLTAGE,
    CELSIUS_TEMPERATURE,
    ELECTRIC_CURRENT,
    INTERNAL_RESISTANCE,
    METROLOGICAL_UNCERTAINTY,
    OPEN_CIRCUIT_VOLTAGE,
    PRESSURE,
    STATE_OF_CHARGE,
    STATE_OF_HEALTH,
    STRAIN,
    WAVELENGTH,
)

NAMESPACES = {
    "emmo": "https://w3id.org/emmo#",
    "electrochemistry": "https://w3id.org/emmo/domain/electrochemistry#",
    "battery": "https://w3id.org/emmo/domain/battery#",
    "soxbms": "https://w3id.org/soxbms/v1#",
    "sosa": "http://www.w3.org/ns/sosa/",
    "xsd": "http://www.w3.org/2001/XMLSchema#",
    "rdfs": "http://www.w3.org/2000/01/rdf-schema#",
    "owl": "http://www.w3.org/2002/07/owl#",
    "skos": "http://www.w3.org/2004/02/skos/core#",
}

# hasMetrologicalUncertainty: a quantity -> its MetrologicalUncertainty. The superclasses of our state-of-safety
# terms: an ordered level (OrdinalQuantity), a coded finding (NominalProperty).
HAS_METROLOGICAL_UNCERTAINTY = "emmo:EMMO_662c64e7_fc72_49b3_a161_f50fd42deafa"
ORDINAL_QUANTITY = "emmo:EMMO_c46f091c_0420_4c1a_af30_0a2c8ebcf7d7"
NOMINAL_PROPERTY = "emmo:EMMO_909415d1_7c43_4d5e_bbeb_7e1910159f66"

# Features of interest: a cell is a BatteryCell, the pack (one board) a Battery.
BATTERY_CELL = "battery:battery_68ed592a_7924_45d0_a108_94d6275d57f0"
BATTERY = "battery:battery_74ed2670_657d_4f0b_b0a6_3f13bc2e9c17"

# Value pattern of the BattINFO context: quantity -hasNumericalPart-> RealData -hasNumberValue-> literal,
# quantity -hasMeasurementUnit-> unit. The BattINFO context also names hasNumberValue
# "hasNumericalValue" (same IRI). EMMO 1.0 has no "emmo:Real"; its RealData is the class below.
HAS_NUMERICAL_PART = "emmo:EMMO_8ef3cd6d_ae58_4a8d_9fc0_ad8f49015cd0"
HAS_MEASUREMENT_UNIT = "emmo:EMMO_bed1d005_b04e_4a90_94cf_02bc678a8569"
HAS_NUMBER_VALUE = "emmo:EMMO_faf79f53_749d_40b2_807c_d34244c192f4"
REAL_DATA = "emmo:EMMO_18d180e4_5e3e_42f7_820c_e08951223486"

# Units. Prefixed and SI units have readable IRIs in EMMO 1.0; UnitOne keeps a UUID IRI.
MILLI_VOLT = "emmo:MilliVolt"
MILLI_AMPERE = "emmo:MilliAmpere"
DEGREE_CELSIUS = "emmo:DegreeCelsius"
PASCAL = "emmo:Pascal"
NANO_SECOND = "emmo:NanoSecond"
PICO_METRE = "emmo:PicoMetre"
UNIT_ONE = "emmo:EMMO_5ebd5e01_0ed3_49a2_a30d_cd05cbe72978"

# skos:prefLabel (EMMO, BattINFO) of every term above, as stated in the pinned source files.
LABELS = {
    CELL_VOLTAGE: "CellVoltage",
    OPEN_CIRCUIT_VOLTAGE: "OpenCircuitVoltage",
    ELECTRIC_CURRENT: "ElectricCurrent",
    CELSIUS_TEMPERATURE: "CelsiusTemperature",
    PRESSURE: "Pressure",
    STRAIN: "Strain",
    ACOUSTIC_QUANTITY: "AcousticQuantity",
    WAVELENGTH: "Wavelength",
    STATE_OF_CHARGE: "StateOfCharge",
    STATE_OF_HEALTH: "StateOfHealth",
    INTERNAL_RESISTANCE: "InternalResistance",
    METROLOGICAL_UNCERTAINTY: "MetrologicalUncertainty",
    HAS_METROLOGICAL_UNCERTAINTY: "hasMetrologicalUncertainty",
    ORDINAL_QUANTITY: "OrdinalQuantity",
    NOMINAL_PROPERTY: "NominalProperty",
    BATTERY_CELL: "BatteryCell",
    BATTERY: "Battery",
    HAS_NUMERICAL_PART: "hasNumericalPart",
    HAS_MEASUREMENT_UNIT: "hasMeasurementUnit",
    HAS_NUMBER_VALUE: "hasNumberValue",
    REAL_DATA: "RealData",
    MILLI_VOLT: "MilliVolt",
    MILLI_AMPERE: "MilliAmpere",
    DEGREE_CELSIUS: "DegreeCelsius",
    PASCAL: "Pascal",
    NANO_SECOND: "NanoSecond",
    PICO_METRE: "PicoMetre",
    UNIT_ONE: "UnitOne",
}

# Terms EMMO lacks, in our namespace, each declared a subclass of the nearest EMMO class and
# published with every export: (CURIE, prefLabel, superclass CURIE, description).
OWN_TERMS = (
    ("soxbms:UltrasonicTimeOfFlight", "UltrasonicTimeOfFlight", ACOUSTIC_QUANTITY,
     "time of flight of an ultrasonic pulse through a cell"),
    ("soxbms:UltrasonicAmplitude", "UltrasonicAmplitude", ACOUSTIC_QUANTITY,
     "received ultrasonic amplitude relative to the emitted one"),
    ("soxbms:FbgBraggWavelength", "FbgBraggWavelength", WAVELENGTH,
     "Bragg wavelength of a fibre Bragg grating strain/temperature sensor on a cell"),
    ("soxbms:StateOfSafety", "StateOfSafety", ORDINAL_QUANTITY,
     "state of safety of a battery as a level: 0 ok, 1 warn, 2 alarm, 3 critical (ordered, no arithmetic)"),
    ("soxbms:SafetyFinding", "SafetyFinding", NOMINAL_PROPERTY,
     "one reason for a state of safety above ok: the check, the cell and the level it reached"),
)

# Wire unit code -> (EMMO unit CURIE, decimal exponent e). The exported number is the wire
# integer times 10**e in that unit; e is 0 where EMMO has the exact (prefixed) unit.
# EMMO has no decidegree Celsius, basis point or microstrain unit: those are scaled.
UNITS = {
    "mV": (MILLI_VOLT, 0),
    "mA": (MILLI_AMPERE, 0),
    "dC": (DEGREE_CELSIUS, -1),
    "Pa": (PASCAL, 0),
    "ns": (NANO_SECOND, 0),
    "bp": (UNIT_ONE, -4),  # 0.01 %
    "pm": (PICO_METRE, 0),
    "ue": (UNIT_ONE, -6),  # microstrain
    "1": (UNIT_ONE, 0),  # a level (state of safety)
}


def expand(curie):
    """Full IRI of a CURIE; ValueError when its prefix is unknown."""
    prefix, _, local = curie.partition(":")
    if prefix not in NAMESPACES:
        raise ValueError("unknown ontology prefix: " + prefix)
    return NAMESPACES[prefix] + local
