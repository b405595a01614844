# Ontology terms of the wire, one table for board and host (MicroPython and CPython subset).
# Namespaces as in the BattINFO JSON-LD context https://w3id.org/emmo/domain/battery/context.
#
# Every EMMO / BattINFO / SOSA term below was checked against the source ontology files; the
# host keeps an extract of those files (host/ontology/pinned.ttl, provenance in
# host/ontology/README.md) and tests/host/test_ontology.py checks this table against it.
# Pinned versions: EMMO 1.0.1 (prefixed SI units from 1.0.2), domain-electrochemistry 0.37.2,
# domain-battery 0.18.7, SOSA (W3C/OGC).

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

# Quantities (classes). The skos:prefLabel of each is in LABELS below.
CELL_VOLTAGE = "electrochemistry:electrochemistry_4ebe2ef1_eea8_4b10_822d_7a68215bd24d"
OPEN_CIRCUIT_VOLTAGE = "electrochemistry:electrochemistry_9c657fdc_b9d3_4964_907c_f9a6e8c5f52b"
ELECTRIC_CURRENT = "emmo:EMMO_c995ae70_3b84_4ebb_bcfc_69e6a281bb88"
CELSIUS_TEMPERATURE = "emmo:EMMO_66bc9029_f473_45ff_bab9_c3509ff37a22"
PRESSURE = "emmo:EMMO_50a44256_9dc5_434b_bad4_74a4d9a29989"
STRAIN = "emmo:EMMO_acf636d4_9ac2_4ce3_960a_d54338e6cae3"
ACOUSTIC_QUANTITY = "emmo:EMMO_50b91f00_d1b3_4638_ab1e_8f982a37621a"
WAVELENGTH = "emmo:EMMO_573c7572_e7c7_4909_93a4_2bfe102e389d"
STATE_OF_CHARGE = "electrochemistry:electrochemistry_8b2aaa50_bbe1_45da_8778_8898326246a2"
STATE_OF_HEALTH = "electrochemistry:electrochemistry_a7a4614f_2426_46f3_8475_cda4a9fabfce"
INTERNAL_RESISTANCE = "electrochemistry:electrochemistry_9bf40017_3f58_4030_ada7_cb37a3dfda2d"

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
}


def expand(curie):
    """Full IRI of a CURIE; ValueError when its prefix is unknown."""
    prefix, _, local = curie.partition(":")
    if prefix not in NAMESPACES:
        raise ValueError("unknown ontology prefix: " + prefix)
    return NAMESPACES[prefix] + local
