"""The library the benchmark scripts share; scripts import only its public names.

- ``benchkit.common``: databases and their reset, child processes, ports, tokens, the peers'
  environment (``bench/.peers``), running another script for its JSON line, CPU readings.
- ``benchkit.workload``: the work several scripts measure alike: the end-to-end rule and its
  events, the SMTP sink, careflow's app in process, the conditions bench's rules and events.
- ``benchkit.drill``: what the fault drills share: a careflow cluster, the sink, the checks.
- ``benchkit.twilio``: a fake of Twilio's Messages API and its signed status callbacks, with
  the SMS drill's faults.
- ``benchkit.loadgen``: the HTTP load generator for ingestion, run as a process of its own.

Scripts in ``bench/perf/``, ``bench/peers/`` and ``bench/drills/`` run as
``python bench/perf/queue.py`` from the repository root. Their first statement after the
standard imports puts ``bench/`` in place of their own folder at the head of ``sys.path``:
``benchkit`` becomes importable, and no script can shadow a standard module by its name
(``perf/queue.py`` would otherwise hide ``queue`` from every library that imports it).
"""
