# The ontology classes of the wire's quantities (CURIEs), for board and host (MicroPython and CPython
# subset). The board needs these for its birth message's alias table and nothing else of the ontology:
# prefixes, labels, units and our own terms are in soxcommon/ontology.py (host side), which re-exports
# these names and whose table tests/host/test_ontology.py checks against the pinned extract.

# Quantities (classes); their skos:prefLabel is in ontology.LABELS.
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
# EMMO metrology: the dispersion of a quantity (its examples: a standard deviation); a board states its SoC's 1σ
# as one (ontology.HAS_METROLOGICAL_UNCERTAINTY ties it to the SoC in an export).
METROLOGICAL_UNCERTAINTY = "emmo:EMMO_847724b7_acef_490e_9f0d_67da967f2812"
