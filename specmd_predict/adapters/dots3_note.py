"""dots3-note text model (dots3_note_text): DeepSeek-V3.2's router unchanged (`Dots3NoteTextTopkRouter: pass`).

Decoder layer i is an MoE layer when `mlp_layer_types[i] == "sparse"`; each MoE block has `shared_experts`
(always resident). The vision tower's MoE is not part of the text model. The rule is written out once, in
deepseek_v3.py.
"""

from specmd_predict.adapters.deepseek_v3 import DeepseekV3Adapter


class Dots3NoteAdapter(DeepseekV3Adapter):
    model_type = "dots3_note_text"
