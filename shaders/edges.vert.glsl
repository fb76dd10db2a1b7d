#version 330 core
// One line per connection: vertex 2e is the source end of connection e, 2e + 1 its
// destination end. Connections are read from a texture by gl_VertexID (no vertex buffer;
// drawing the first 2K vertices draws the K strongest). Brightness follows the source
// neuron's activity and the connection's weight. Lines too faint to see are clipped away
// in the vertex stage: a CPU rasterizer pays for every pixel of a line.
#include "frame.glsl"
#include "map_common.glsl"

uniform usampler2D u_edges;  // per connection: source node, (weight * 255) << 24 | destination node

out vec3 v_colour;

void main() {
    uvec2 edge = texelFetch(u_edges, run_texel(gl_VertexID >> 1), 0).xy;
    int src = int(edge.x);
    // weight shaped by a square root: weights are heavy-tailed, most lines would vanish
    float weight = sqrt(float(edge.y >> 24u) / 255.0);
    float g = glow(activation(src));
    float level = u_edge.x * weight * 0.25 * g * g;  // quiet sources: no line (and no cost)
    if (level < u_edge.y) {
        gl_Position = OUTSIDE;
        v_colour = vec3(0.0);
        return;
    }
    bool at_source = (gl_VertexID & 1) == 0;
    vec4 record = node_record(at_source ? src : int(edge.y & 0xFFFFFFu));
    // each end in its neuron's colour, fading along the direction of flow
    v_colour = tap_colour(record.z) * level * (at_source ? 1.0 : 0.2);
    gl_Position = to_clip(to_pixels(record.xy));
}
