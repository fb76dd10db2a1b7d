#version 330 core
// The selection's halo, pass 1: a cone under every selected neuron, drawn with MAX
// blending into a small buffer, one field for each deck's selection (red: A, green: B). The result is 1 - (distance to the nearest selected
// neuron) / reach: a distance field the composite pass turns into a glowing outline
// around the selected region.
#include "frame.glsl"
#include "map_common.glsl"

flat out vec2 v_decks;  // which deck's field this cone raises: deck A's in red, deck B's in green

void main() {
    int node = gl_VertexID;
    float flag = selected(node);
    v_decks = halo_decks(flag);
    if (flag < 0.5) {
        gl_Position = OUTSIDE;
        gl_PointSize = 1.0;
        return;
    }
    gl_PointSize = 2.0 * u_halo.y * u_halo.z;
    gl_Position = to_clip(to_pixels(node_record(node).xy));
}
