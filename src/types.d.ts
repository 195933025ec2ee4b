/** Text files bundled by esbuild's text loader (the D-Bus contract). */
declare module '*.xml' {
  const text: string;
  export default text;
}
