"""Machine-readable contracts of the events, generated from the models: JSON Schemas
(``schemas``) and the AsyncAPI 3 document of every topic (``asyncapi``). ``make contracts``
writes them under ``docs/``; unit tests keep the committed copies equal to the code's."""
