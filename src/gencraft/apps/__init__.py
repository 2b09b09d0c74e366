"""The content kits, each composing a text model, the decoding engine, post-processing and the guard.

* :mod:`gencraft.apps.write` -- writing assistant: ``continue_text``, ``draft`` (outline, then sections),
  with memory, author's note and world info.
* :mod:`gencraft.apps.game` -- typed game records (names, npc, quest, item, dialogue) under JSON Schemas,
  and ``sprites`` from an image run; :mod:`gencraft.apps.maps` -- tile maps checked playable.
* :mod:`gencraft.apps.ads` -- ad variants within channel limits, ranked; ad images; platform CSV.
* :mod:`gencraft.apps.music` -- ``compose``: a well-formed tune from a music run (the REMI grammar of
  :mod:`gencraft.apps.music_grammar` in the processor chain), as MIDI (and WAV). The music codec it
  writes with (events, MIDI, the event tokenizer) is :mod:`gencraft.music`, below the data stage.
"""
