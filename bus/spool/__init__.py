"""A write-ahead spool on local disk in front of the bus: ``log`` (the record and file format,
recovery), ``store`` (one directory at run time: group commit, reader, acknowledgements),
``bus`` (``SpoolBus``, the bus stage) and ``command`` (``telemetry-gateway spool``)."""
