#version 330 core
in vec3 v_colour;
in float v_hot;
out vec4 f_colour;

void main() {
    vec2 p = gl_PointCoord * 2.0 - 1.0;
    float core = max(1.0 - dot(p, p), 0.0);
    core *= core * core;  // a soft dot (close to a gaussian) that reaches zero at the rim
    f_colour = vec4(v_colour * core + vec3(v_hot * core * core), 1.0);
}
