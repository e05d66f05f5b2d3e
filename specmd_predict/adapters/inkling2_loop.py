"""Inkling2 with a looped block (inkling2_loop_text): Inkling2's router (inkling2.py), layers run several times.

Decoder layers `loop_layer_index_start` .. `loop_layer_index_end` - 1 run `loop_num_passes` times in one forward
(each repetition restarts from the block's input and reads messages from the previous one), with the same routers
and experts: one MoE layer routes several times per token. Each call follows Inkling2's rule, and the experts are
the same weights every time, so the runtime drives them as usual (its clock counts each repetition of the block as
a pass). A harvest row holds one routing per MoE layer and token, so harvests refuse this family.
"""

from __future__ import annotations

from specmd_predict.adapters.inkling2 import Inkling2Adapter


class Inkling2LoopAdapter(Inkling2Adapter):
    model_type = "inkling2_loop_text"
    harvest_refusal = (
        "its looped decoder layers route several times per token in one forward, and a harvest row holds one "
        "routing per MoE layer and token"
    )

    def calls_per_forward(self, layer: int) -> int:
        looped = self.config.loop_layer_index_start <= self.decoder_indices[layer] < self.config.loop_layer_index_end
        return self.config.loop_num_passes if looped else 1
