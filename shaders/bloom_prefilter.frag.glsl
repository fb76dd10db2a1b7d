#version 330 core
// First bloom level (half resolution): a 4x4 box of the HDR scene, keeping only the light
// above the threshold (with a soft knee, so the glow fades in instead of popping).
#include "frame.glsl"
#include "box4.glsl"

uniform sampler2D u_source;
in vec2 v_uv;
out vec4 f_colour;

void main() {
    vec3 c = box4(u_source, v_uv);
    float threshold = u_bloom.z, knee = u_bloom.w;
    float peak = max(c.r, max(c.g, c.b));
    float soft = clamp(peak - threshold + knee, 0.0, 2.0 * knee);
    soft = soft * soft / (4.0 * knee + 1e-5);
    c *= max(soft, peak - threshold) / max(peak, 1e-5);
    f_colour = vec4(c, 1.0);
}
