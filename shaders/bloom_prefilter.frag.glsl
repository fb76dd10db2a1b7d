#version 330 core
// First bloom level (half resolution): a 4x4 box of the HDR scene, keeping only the light
// above the threshold (with a soft knee, so the glow fades in instead of popping).
#include "frame.glsl"

uniform sampler2D u_source;
in vec2 v_uv;
out vec4 f_colour;

void main() {
    vec2 t = 1.0 / vec2(textureSize(u_source, 0));
    vec3 c = 0.25 * (texture(u_source, v_uv + t * vec2(-1.0, -1.0)).rgb + texture(u_source, v_uv + t * vec2(1.0, -1.0)).rgb
                   + texture(u_source, v_uv + t * vec2(-1.0, 1.0)).rgb + texture(u_source, v_uv + t * vec2(1.0, 1.0)).rgb);
    float threshold = u_bloom.z, knee = u_bloom.w;
    float peak = max(c.r, max(c.g, c.b));
    float soft = clamp(peak - threshold + knee, 0.0, 2.0 * knee);
    soft = soft * soft / (4.0 * knee + 1e-5);
    c *= max(soft, peak - threshold) / max(peak, 1e-5);
    f_colour = vec4(c, 1.0);
}
