"""``mara_bench time``: measurement and FLOP counting (:mod:`.measure`), size sweeps (:mod:`.sweep`) and the test
systems (:mod:`.systems`)."""
