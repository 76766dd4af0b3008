"""The cold-start loop: real inputs captured from a served student train the next one.

    loop.py     captures -> reviewed, parsed real inputs -> relabelled -> the next run's dataset
    relabel.py  the teacher answers real inputs through the spec's later steps (synthesis engine)
    compare.py  v1 vs v2 on held-out real inputs: bits per byte, judge grades, pairwise win rate
    drift.py    how real inputs differ from simulated ones (HTML report)
    promote.py  deployments: promote, split traffic, roll back; every switch an event
"""
