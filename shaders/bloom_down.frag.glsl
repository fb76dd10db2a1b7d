#version 330 core
// Next bloom level down (half the size): a 4x4 box from four bilinear taps.
uniform sampler2D u_source;
in vec2 v_uv;
out vec4 f_colour;

void main() {
    vec2 t = 1.0 / vec2(textureSize(u_source, 0));
    vec3 c = texture(u_source, v_uv + t * vec2(-1.0, -1.0)).rgb + texture(u_source, v_uv + t * vec2(1.0, -1.0)).rgb
           + texture(u_source, v_uv + t * vec2(-1.0, 1.0)).rgb + texture(u_source, v_uv + t * vec2(1.0, 1.0)).rgb;
    f_colour = vec4(0.25 * c, 1.0);
}
