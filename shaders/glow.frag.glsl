#version 330 core
// The light that sits over the scene, at quarter size: the bloom, scaled by its
// intensity, plus the selection's halo, a glowing outline drawn where the distance field
// crosses HALO_EDGE and a faint veil inside it. One small texture for the composite to
// read, instead of two full-size ones.
#include "frame.glsl"

uniform sampler2D u_bloom_level;  // first bloom level (same size as this pass)
uniform sampler2D u_halo_field;   // 1 - distance to the nearest selected neuron / reach, deck A's in red, B's in green
out vec4 f_colour;

const float HALO_EDGE = 0.35;                    // outline at 65% of the reach from the nearest selected neuron
const vec3 HALO_COLOUR = vec3(1.0, 0.82, 0.55);  // linear twin of palette.HALO_COLOUR_SRGB
const vec3 HALO_COLOUR_B = vec3(0.25, 0.8, 0.55);  // deck B's selection: linear twin of palette.HALO_COLOUR_B_SRGB

float halo_light(float h) {
    float ring = (h - HALO_EDGE) / u_halo.w;
    float outer = ring / 4.0;  // a soft glow around the outline, gone where the field ends (h = 0)
    return exp(-ring * ring) + 0.25 * exp(-outer * outer) * smoothstep(0.0, HALO_EDGE, h)
           + 0.01 * smoothstep(HALO_EDGE, HALO_EDGE + 0.25, h);
}

void main() {
    ivec2 p = ivec2(gl_FragCoord.xy);
    vec3 c = vec3(0.0);
    if (u_grade.z > 0.5) {
        c += u_bloom.x * texelFetch(u_bloom_level, p, 0).rgb;
    }
    if (u_grade.w > 0.5) {
        vec2 h = texelFetch(u_halo_field, p, 0).rg;
        c += u_halo.x * (HALO_COLOUR * halo_light(h.r) + (h.g > 0.0 ? HALO_COLOUR_B * halo_light(h.g) : vec3(0.0)));
    }
    f_colour = vec4(c, 1.0);
}
