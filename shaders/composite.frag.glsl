#version 330 core
// HDR scene + glow (bloom and halo) -> the screen: exposure, filmic tone map, gamma, and a
// little dither so the dark gradients of the glow do not band on a projector. This pass
// touches every pixel: keep it to two texture reads.
#include "frame.glsl"

uniform sampler2D u_scene;
uniform sampler2D u_glow;  // quarter size, smoothed by bilinear filtering
in vec2 v_uv;
out vec4 f_colour;

// Narkowicz's fit of the ACES filmic curve: HDR -> 0..1, soft shoulder, no hard clip.
vec3 aces(vec3 x) {
    return clamp((x * (2.51 * x + 0.03)) / (x * (2.43 * x + 0.59) + 0.14), 0.0, 1.0);
}

void main() {
    vec3 c = texelFetch(u_scene, ivec2(gl_FragCoord.xy), 0).rgb;
    if (u_grade.y > 0.5) {
        c += texture(u_glow, v_uv).rgb;
    }
    c = sqrt(aces(c * u_grade.x));  // gamma 2: close to sRGB, much cheaper than pow
    float noise = fract(52.9829189 * fract(dot(gl_FragCoord.xy, vec2(0.06711056, 0.00583715))));
    f_colour = vec4(c + (noise - 0.5) / 255.0, 1.0);
}
