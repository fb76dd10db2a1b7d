#version 330 core
// One glowing point sprite per neuron (vertex = node id). On a CPU rasterizer one vertex
// per neuron is far cheaper than an instanced quad; quiet neurons get the smallest sprites
// because their count, not their size, is what costs.
#include "frame.glsl"
#include "map_common.glsl"

out vec3 v_colour;  // HDR colour at the sprite's center
out float v_hot;    // how much the center burns towards white

void main() {
    int node = gl_VertexID;
    vec4 record = node_record(node);
    float g = glow(activation(node));
    float level = u_node.x * (u_node.z + g * (1.2 + 0.4 * g));
    v_colour = node_colour(node, record.z) * level;
    v_hot = u_node.x * 0.3 * max(g - 0.6, 0.0);
    gl_PointSize = max(u_node.y * (1.0 + 1.2 * g), 2.0);  // active neurons swell
    gl_Position = to_clip(to_pixels(record.xy));
}
